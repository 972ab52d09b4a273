"""The worker-side request class of our tasks (Celery's documented ``Task.Request`` extension point).

- It refuses task messages that lack their id or name. Celery reads ``headers['id']`` while building a request; a
  message without one raises ``KeyError`` in the consumer, which Celery treats as a lost connection: the message is
  restored and redelivered forever, and the worker gives up with RestartFreqExceeded. Raising ``InvalidTaskError``
  instead makes Celery reject and log the message.
- Before a finished task's message is acknowledged, what the task stored must be durable: a task may say so by a
  ``settle_before_ack()`` that returns False when it could not make it so (local storage flushes a job's audio after
  its result, see ``worker.storage.local``). Then the message goes back to its queue instead: the job runs again.
"""

from __future__ import annotations

from typing import Any

from celery.exceptions import InvalidTaskError
from celery.worker.request import Request


class ValidatedRequest(Request):
    def __init__(self, message: Any, **options: Any) -> None:  # Celery's strategy passes all but the message by name
        headers = options.get("headers")
        fields = headers if headers is not None else message.headers
        missing = [name for name in ("id", "task") if not isinstance(fields, dict) or not fields.get(name)]
        if missing:
            raise InvalidTaskError(f"task message without {' or '.join(missing)}; rejected")
        super().__init__(message, **options)

    def acknowledge(self) -> None:
        # Celery's on_success and on_failure both acknowledge through here (the request class Celery generates around
        # this one has an on_success of its own, so this is the one place to wait)
        if not self.acknowledged and not self._settled():
            return
        super().acknowledge()

    def _settled(self) -> bool:
        settle = getattr(self.task, "settle_before_ack", None)
        if settle is None or settle():
            return True
        self.reject(requeue=True)
        return False
