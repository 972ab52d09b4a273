"""Celery's Redis result backends (plain and Sentinel), for a Redis that refuses writes for a while.

A Redis at ``maxmemory`` with ``noeviction`` (what production runs, so that queued jobs never vanish) answers writes
with ``OOM command not allowed`` until memory is freed. Celery retries result writes only on connection errors, and a
result write that raises inside a task's trace is an internal error: the message is acknowledged, and the job is gone.
So:

- the ``STARTED`` state, which only says that a job began, is written once; if Redis refuses it, the job runs anyway
  (the worker's events still tell Flower);
- every other state is retried with backoff (``result_backend_always_retry``) while Redis refuses it for memory, is
  loading its data, or is a replica in a failover, for up to ``result_backend_max_retries`` attempts. A job whose audio
  is stored is never thrown away for want of room for its result.

Selected by URL, as Celery's own aliases are: ``worker.broker.results:RedisBackend+redis://…``
(see ``worker.celery_app``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from celery import states
from celery.backends import redis as celery_redis
from redis.exceptions import ResponseError

log = logging.getLogger(__name__)

# Redis's answers that a moment later may be different: out of memory, loading its data, a replica being promoted.
RETRIED_REPLIES = ("OOM ", "LOADING ", "READONLY ", "MASTERDOWN ", "BUSY ", "TRYAGAIN ")


if TYPE_CHECKING:
    class _RedisBackend(celery_redis.RedisBackend):
        # Celery's own (private, so its stubs leave it out): stores an encoded result
        def _store_result(self, task_id: str, result: Any, state: str, traceback: str | None = None,
                          request: Any = None, **kwargs: Any) -> Any: ...
else:
    _RedisBackend = object  # at run time the backends below take Celery's from their other base


class _Patient(_RedisBackend):
    def exception_safe_to_retry(self, exc: Exception) -> bool:
        if isinstance(exc, ResponseError) and str(exc).startswith(RETRIED_REPLIES):
            return True
        return super().exception_safe_to_retry(exc)

    def store_result(self, task_id: str, result: Any, state: str, *args: Any, **kwargs: Any) -> Any:
        if state != states.STARTED:
            return super().store_result(task_id, result, state, *args, **kwargs)
        try:
            return self._store_result(task_id, self.encode_result(result, state), state, *args, **kwargs)
        except Exception as exc:  # advisory: the job must not fail because its start could not be noted
            log.warning("could not record that task %s started (%s); it runs anyway", task_id, exc)
            return result


class RedisBackend(_Patient, celery_redis.RedisBackend):
    pass


class SentinelBackend(_Patient, celery_redis.SentinelBackend):
    pass
