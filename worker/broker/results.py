"""Celery's Redis result backends (plain and Sentinel), for a Redis that refuses writes for a while.

A Redis at ``maxmemory`` with ``noeviction`` (what production runs, so that queued jobs never vanish) answers writes
with ``OOM command not allowed`` until memory is freed. Celery retries result writes only on connection errors, and a
result write that raises inside a task's trace is an internal error: the message is acknowledged, and the job is gone.
So:

- the ``STARTED`` state, which only says that a job began, is written once, on a thread of its own and a moment
  after the job starts (``STARTED_AFTER_S``), so that the job's way to its engine competes with neither the round trip
  nor its encoding; a job that ends sooner gets no STARTED at all. The task's next state waits for a write that has
  begun, so it can never land after, and overwrite, the final one. If Redis refuses it, the job runs anyway (the
  worker's events still tell Flower);
- every other state is retried with backoff (``result_backend_always_retry``) while Redis refuses it for memory, is
  loading its data, or is a replica in a failover, for up to ``result_backend_max_retries`` attempts. A job whose audio
  is stored is never thrown away for want of room for its result.

Selected by URL, as Celery's own aliases are: ``worker.broker.results:RedisBackend+redis://…``
(see ``worker.celery_app``).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from time import monotonic
from typing import TYPE_CHECKING, Any, ClassVar

from celery import states
from celery.backends import redis as celery_redis
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str
from redis.exceptions import ResponseError

from worker.broker.redis import passing_refusal, refuses_scripts

log = logging.getLogger(__name__)


if TYPE_CHECKING:
    class _RedisBackend(celery_redis.RedisBackend):
        # Celery's own (private, so its stubs leave them out)
        _MAX_STR_VALUE_SIZE: int
        expires: int | None
        failure_expires: int | None

        def _store_result(self, task_id: str, result: Any, state: str, traceback: str | None = None,
                          request: Any = None, **kwargs: Any) -> Any: ...

        def _get_result_meta(self, result: Any, state: str, traceback: str | None, request: Any,
                             format_date: bool = True, encode: bool = False) -> dict[str, Any]: ...
else:
    _RedisBackend = object  # at run time the backends below take Celery's from their other base


#: Store a task's state and tell the clients waiting for it, unless the stored state is SUCCESS already (a late state,
#: a lost worker's or a duplicate's, never replaces it; a STARTED, written late, replaces only a waiting state:
#: pending, received, started, retrying). KEYS: the task's key. ARGV: the encoded state, its lifetime in seconds
#: (0: none), 1 if it is a STARTED state.
SET_UNLESS_SUCCEEDED = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  local status = ok and type(meta) == 'table' and meta.status
  if status == 'SUCCESS' or (ARGV[3] == '1' and status and status ~= 'PENDING' and status ~= 'RECEIVED'
                             and status ~= 'STARTED' and status ~= 'RETRY') then
    return 0
  end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""

#: How long states are stored with plain commands after Redis refused the script (scripting disabled, an ACL without
#: EVALSHA), before the script is tried again.
SCRIPTS_REFUSED_S = 300.0

#: A job's STARTED state is written this long after it starts, and only if it has not ended by then: the write (its
#: encoding and a Redis round trip, on another thread of the same interpreter) never competes with the job's own way to
#: its engine, and a job done sooner (a skip, a short request on a GPU) needs none: its final state says more.
STARTED_AFTER_S = 0.02


@dataclass
class _Start:
    ended: threading.Event  # set when the job's next state is written: a STARTED not yet written is not needed
    writing: Future[None]


class _Patient(_RedisBackend):
    #: Writes STARTED states, shared by the task threads (each of which has a backend instance of its own).
    _noter: ClassVar[ThreadPoolExecutor | None] = None
    _noter_lock: ClassVar[threading.Lock] = threading.Lock()

    def exception_safe_to_retry(self, exc: Exception) -> bool:
        if passing_refusal(exc):
            return True
        return super().exception_safe_to_retry(exc)

    def store_result(self, task_id: str, result: Any, state: str, *args: Any, **kwargs: Any) -> Any:
        started: dict[str, _Start] = self.__dict__.setdefault("_started", {})
        if state == states.STARTED:
            ended = threading.Event()
            try:
                writing = self._noting().submit(self._note_started, task_id, result, args, kwargs, ended)
            except RuntimeError:  # the interpreter is shutting down: written here, as Celery would
                self._write_started(task_id, result, args, kwargs)
                return result
            start = started[task_id] = _Start(ended, writing)
            # once written, nothing needs to wait for it (and a task that ends with no state stored leaves nothing)
            writing.add_done_callback(lambda _: self._written(started, task_id, start))
            return result
        begun = started.pop(task_id, None)
        if begun is not None:  # the STARTED write first, if it began: never after this state
            begun.ended.set()
            if not begun.writing.cancel():
                begun.writing.exception()
        return super().store_result(task_id, result, state, *args, **kwargs)

    _scripts_refused_until: ClassVar[float] = 0.0

    def _store_result(self, task_id: str, result: Any, state: str, traceback: str | None = None,
                      request: Any = None, **kwargs: Any) -> Any:
        """Celery's Redis backend reads a task's stored state before it writes the next, so that a late state never
        replaces SUCCESS: two round trips on every job's way to its client. Here one script does both."""
        if monotonic() < _Patient._scripts_refused_until:
            return super()._store_result(task_id, result, state, traceback, request, **kwargs)
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError(f"the {state} state of task {task_id} is too large for Redis")
        lifetime = self.failure_expires if state == states.FAILURE else self.expires
        try:
            self.ensure(self._set_unless_succeeded, (self.get_key_for_task(task_id), value,
                                                     max(1, round(lifetime)) if lifetime else 0,
                                                     state == states.STARTED))
        except ResponseError as exc:
            if not refuses_scripts(exc):
                raise
            _Patient._scripts_refused_until = monotonic() + SCRIPTS_REFUSED_S
            log.warning("Redis refused the result script (%s); storing states with a read, then a write, for %.0f s",
                        exc, SCRIPTS_REFUSED_S)
            return super()._store_result(task_id, result, state, traceback, request, **kwargs)
        return result

    def _set_unless_succeeded(self, key: bytes | str, value: str | bytes, lifetime: int, started: bool) -> None:
        script = self.__dict__.get("_unless_succeeded")
        if script is None:
            script = self.__dict__["_unless_succeeded"] = self.client.register_script(SET_UNLESS_SUCCEEDED)
        script(keys=[key], args=[value, lifetime, 1 if started else 0])

    @staticmethod
    def _written(started: dict[str, _Start], task_id: str, start: _Start) -> None:
        if started.get(task_id) is start:
            started.pop(task_id, None)  # the task's thread may have taken it meanwhile

    @classmethod
    def _noting(cls) -> ThreadPoolExecutor:
        with cls._noter_lock:
            if cls._noter is None:
                # a few: one slow write must not hold every other task's final state behind it
                cls._noter = ThreadPoolExecutor(max_workers=4, thread_name_prefix="f5-started")
            return cls._noter

    def _note_started(self, task_id: str, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                      ended: threading.Event) -> None:
        if not ended.wait(STARTED_AFTER_S):
            self._write_started(task_id, result, args, kwargs)

    def _write_started(self, task_id: str, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            self._store_result(task_id, self.encode_result(result, states.STARTED), states.STARTED, *args, **kwargs)
        except Exception as exc:  # advisory: the job must not fail because its start could not be noted
            log.warning("could not record that task %s started (%s); it runs anyway", task_id, exc)


class RedisBackend(_Patient, celery_redis.RedisBackend):
    pass


class SentinelBackend(_Patient, celery_redis.SentinelBackend):
    pass
