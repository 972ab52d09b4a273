"""What the gateway's endpoints do, apart from HTTP: send jobs, read their state, find their audio, know the queue.

Torch-free. Jobs go out by task name through the worker's own Celery app (JSON only). Each accepted job is noted in
Redis (its output key, for ``/audio``; an unknown id is a 404 instead of Celery's eternal PENDING). The queue's length
and the workers' presence are read at most once a second.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache
from celery import Celery

from worker.broker.redis import RedisBookkeeping
from worker.constants import TASK_SYNTHESIZE
from worker.contract import Job
from worker.errors import BadInputError
from worker.settings import Settings
from worker.storage import Storage
from worker.voices import Voice, VoiceError, load_voice

log = logging.getLogger(__name__)

GATEWAY_JOB_PREFIX = "f5tts:gateway:job:"


@dataclass(frozen=True)
class Sent:
    id: str
    job_id: str
    key: str


class _Cached:
    """A value read at most once per ``ttl_s`` (the queue's length, the workers' presence)."""

    def __init__(self, read: Callable[[], Any], ttl_s: float) -> None:
        self.read, self.ttl_s = read, ttl_s
        self._value: Any = None
        self._at = -1e9
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if time.monotonic() - self._at >= self.ttl_s:
                self._value, self._at = self.read(), time.monotonic()
            return self._value


class JobRegistry(RedisBookkeeping):
    """The jobs this gateway accepted: id → job id and output key, kept as long as Celery keeps results."""

    def note(self, sent: Sent, ttl_s: int) -> None:
        self._client.set(f"{GATEWAY_JOB_PREFIX}{sent.id}", json.dumps({"job_id": sent.job_id, "key": sent.key}),
                         ex=ttl_s)

    def find(self, task_id: str) -> Sent | None:
        raw = self._client.get(f"{GATEWAY_JOB_PREFIX}{task_id}")
        if raw is None:
            return None
        record = json.loads(raw)
        return Sent(task_id, record["job_id"], record["key"])


class GatewayService:
    def __init__(self, settings: Settings, app: Celery, storage: Storage) -> None:
        self.settings = settings
        self.app = app
        self.storage = storage
        self.registry = JobRegistry.for_results(settings.broker)
        self._voices: TTLCache = TTLCache(maxsize=64, ttl=60)
        self._queue_length = _Cached(self._read_queue_length, 1.0)
        self._workers = _Cached(self._read_workers, 2.0)

    # ------------------------------------------------------------------------------------------- sending

    def send(self, job: Job, priority: int) -> Sent:
        sent = Sent(job.task_id(), job.resolved_job_id(), job.resolved_key())
        self.registry.note(sent, self.settings.broker.result_expires)
        self.app.send_task(TASK_SYNTHESIZE, kwargs={"job": job.model_dump(mode="json", exclude_none=True)},
                           task_id=sent.id, queue=self.settings.broker.queue, priority=priority,
                           kwargsrepr=f"{{'job': {sent.job_id!r} -> {sent.key!r} (gateway)}}")
        return sent

    def voice(self, name: str | None) -> Voice:
        name = name or self.settings.gateway.default_voice
        if not name:
            raise BadInputError("unknown_voice", "name a voice, or configure F5_DEFAULT_VOICE", "voice")
        cached = self._voices.get(name)
        if cached is None:
            try:
                cached = self._voices[name] = load_voice(self.storage, name)
            except VoiceError as exc:
                raise BadInputError("unknown_voice", str(exc), "voice") from None
        return cached

    # ------------------------------------------------------------------------------------------- the queue

    def _read_queue_length(self) -> int:
        with self.app.connection_for_read() as connection:
            try:
                return int(connection.default_channel.queue_declare(queue=self.settings.broker.queue,
                                                                    passive=True).message_count)
            except Exception:  # not declared yet: nothing waits
                return 0

    def queue_full(self) -> bool:
        return self._queue_length.get() >= self.settings.gateway.max_queued

    def broker_ok(self) -> bool:
        try:
            with self.app.connection_for_read() as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
            return True
        except Exception:
            return False

    def _read_workers(self) -> int:
        try:
            return len(self.app.control.ping(timeout=1.0) or [])
        except Exception:
            return 0

    def workers(self) -> int:
        return self._workers.get()
