"""The worker-side request class of our tasks, refusing task messages that lack their id or name.

Celery reads ``headers['id']`` while building a request; a message without one raises ``KeyError`` in the consumer,
which Celery treats as a lost connection: the message is restored and redelivered forever, and the worker gives up
with RestartFreqExceeded. Raising ``InvalidTaskError`` instead makes Celery reject and log the message (Celery's
documented ``Task.Request`` extension point).
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
