"""What the gateway's endpoints do, apart from HTTP: send jobs, read their state, find their audio, know the queue.

Torch-free. Jobs go out by task name through the worker's own Celery app (JSON only). Each accepted job is noted in
Redis (its output key, for ``/audio``; an unknown id is a 404 instead of Celery's eternal PENDING). The queue's length,
the broker's reachability and the workers' presence are read at most once a second or two.

Every send gets a fresh task id: a job sent again (after it failed, or was revoked) is a new run with its own state,
never answered by an earlier run's. Idempotence stays where it belongs, in the output key and the worker's skip check.
A job's ``output.key`` must lie under the gateway's namespace (``F5_GATEWAY_KEY_PREFIX``, ``api/``): a gateway client
can never overwrite a book's audio, or anything else outside it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
from cachetools import TTLCache
from celery import Celery
from celery.result import AsyncResult

from worker.broker.redis import RedisBookkeeping
from worker.constants import TASK_SYNTHESIZE
from worker.contract import Job
from worker.errors import BadInputError
from worker.settings import Settings
from worker.storage import Storage
from worker.voices import Voice, VoiceError, list_voices, load_voice

log = logging.getLogger(__name__)

GATEWAY_JOB_PREFIX = "f5tts:gateway:job:"
# Threads the waits of /tts requests may use at once to read job states (each read is one short Redis call), apart
# from the pool that serves the other endpoints: a burst of waiting /tts requests never starves health checks.
POLL_THREADS = 16


@dataclass(frozen=True)
class Sent:
    id: str
    job_id: str
    key: str


T = TypeVar("T")


class _Cached(Generic[T]):
    """A value read at most once per ``ttl_s`` (the queue's length, the workers' presence)."""

    def __init__(self, read: Callable[[], T], ttl_s: float) -> None:
        self.read, self.ttl_s = read, ttl_s
        self._value: T  # read on the first get
        self._at = -1e9
        self._lock = threading.Lock()

    def get(self) -> T:
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
        self._voices: TTLCache[str, Voice] = TTLCache(maxsize=64, ttl=60)
        self._queue_length = _Cached(self._read_queue_length, 1.0)
        self._workers = _Cached(self._read_workers, 2.0)
        self._broker_ok = _Cached(self._read_broker_ok, 2.0)
        self._only_voice = _Cached(self._read_only_voice, 10.0)
        self._pollers: anyio.CapacityLimiter | None = None
        self.presigner = self._presigner()

    def _presigner(self) -> Any:
        """What signs audio redirects: the storage itself, or (``F5_GATEWAY_PUBLIC_S3_ENDPOINT``) the same bucket as
        clients reach it; a URL signed for an internal endpoint would not resolve for them. None for a folder."""
        if not hasattr(self.storage, "presigned_url"):
            return None
        public = self.settings.gateway.public_s3_endpoint
        if not public:
            return self.storage
        from worker.settings import StorageSettings
        from worker.storage import by_url

        storage = self.settings.storage
        return by_url(self.storage.url, StorageSettings(**{**storage.model_dump(), "s3_endpoint_url": public}))

    # ------------------------------------------------------------------------------------------- sending

    def check_key(self, job: Job) -> None:
        """A gateway job writes under the gateway's namespace, or to a key derived from its content."""
        prefix = self.settings.gateway.key_prefix
        key = job.output.key
        if key is not None and not key.startswith(prefix):
            raise BadInputError("bad_key", f"{key[:80]!r} is outside {prefix!r}: jobs sent through the gateway "
                                f"name their output under {prefix}, or leave it out to get a key derived from "
                                "their content", "output.key")

    def send(self, job: Job, priority: int) -> Sent:
        self.check_key(job)
        sent = Sent(f"{job.resolved_job_id()}.{uuid.uuid4().hex[:16]}", job.resolved_job_id(), job.resolved_key())
        self.registry.note(sent, self.settings.broker.result_expires)
        self.app.send_task(TASK_SYNTHESIZE, kwargs={"job": job.model_dump(mode="json", exclude_none=True)},
                           task_id=sent.id, queue=self.settings.broker.queue, priority=priority,
                           kwargsrepr=f"{{'job': {sent.job_id!r} -> {sent.key!r} (gateway)}}")
        return sent

    async def finished(self, task_id: str, timeout_s: float) -> AsyncResult[Any] | None:
        """The job's result once it has finished (succeeded or failed), or None after ``timeout_s``. Waits on the
        event loop, not in a thread: a /tts that waits a minute holds no worker thread of the server."""
        if self._pollers is None:
            self._pollers = anyio.CapacityLimiter(POLL_THREADS)
        result: AsyncResult[Any] = AsyncResult(task_id, app=self.app)
        deadline = time.monotonic() + timeout_s
        pause = 0.005
        while True:
            state: str = await anyio.to_thread.run_sync(lambda: result.state, limiter=self._pollers)
            if state in ("SUCCESS", "FAILURE", "REVOKED"):
                return result
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 1.5, 0.1)  # quick answers stay quick; long waits cost a few reads a second

    def voice(self, name: str | None) -> Voice:
        name = name or self.settings.gateway.default_voice or self._only_voice.get()
        if not name:
            raise BadInputError("unknown_voice", "name a voice (\"voice\": NAME), or configure F5_DEFAULT_VOICE: "
                                "there is more than one voice, or none (add one with `f5-batch voice add`)", "voice")
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
                declared = connection.default_channel.queue_declare(  # type: ignore[attr-defined]  # kombu-stubs' StdChannel omits queue_declare
                    queue=self.settings.broker.queue, passive=True)
                return int(declared.message_count)
            except Exception:  # not declared yet: nothing waits
                return 0

    def queue_full(self) -> bool:
        return self._queue_length.get() >= self.settings.gateway.max_queued

    def _read_only_voice(self) -> str | None:
        """The voice to use when a request names none and no default is configured: the only one there is."""
        try:
            voices = list_voices(self.storage)
        except Exception as exc:
            log.warning("could not list the voices: %s", exc)
            return None
        return voices[0].name if len(voices) == 1 else None

    def _read_broker_ok(self) -> bool:
        try:
            with self.app.connection_for_read() as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
            return True
        except Exception:
            return False

    def broker_ok(self) -> bool:
        return self._broker_ok.get()

    def _read_workers(self) -> int:
        try:
            return len(self.app.control.ping(timeout=1.0) or [])
        except Exception:
            return 0

    def workers(self) -> int:
        return self._workers.get()
