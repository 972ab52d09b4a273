"""From job payloads to stored audio: validate, skip what is already stored, synthesise, encode, upload.

Celery-free and torch-free (the engine processes are reached through ``EngineHost``). Runs in a task's thread: the
I/O here (the skip check's HEAD, the reference's GET, the WAV's PUT) overlaps the engine's passes, which other tasks
keep fed. Each job is its own ticket in the engine, so a batch's jobs spread over passes like any others.

Every job ends in one :class:`JobOutcome`: stored (or skipped), failed for good (``error``, a :class:`BadInputError`:
bad input, a time limit, a process lost every time it ran the job), or hit by a transient fault (``transient``:
storage down, its engine process lost), which the task retries.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from worker import constants as c
from worker.audio import encode_wav
from worker.contract import Job, JobResult, Timings
from worker.engine.precision import job_precision
from worker.engine.types import SynthesisOutput, SynthesisRequest, VoiceInput
from worker.errors import BadInputError, TransientError, WorkerLostError
from worker.runtime.deliveries import LostRuns
from worker.runtime.references import ReferenceStore
from worker.storage import ObjectInfo, Storage

log = logging.getLogger(__name__)


@dataclass
class JobOutcome:
    job_id: str | None
    key: str | None = None
    result: JobResult | None = None
    error: BadInputError | None = None  # failed for good: dead-lettered, not retried
    transient: Exception | None = None  # a fault outside the job: the task retries it
    duration_s: float = 0.0


@dataclass(frozen=True)
class RunLimits:
    """How long one job may take (the task's soft and hard time limits), and its queue priority."""

    timeout_s: float | None = None
    hard_timeout_s: float | None = None
    priority: int = 0


class Engines(Protocol):
    """What the runner needs from the engine processes (``EngineHost``)."""

    model_name: str
    precision: str
    fingerprint: str

    def submit(self, requests: Sequence[SynthesisRequest], keys: Sequence[str], *, priority: int = 0,
               alone: bool = False) -> tuple[Any, Any]: ...

    def wait(self, submitted: tuple[Any, Any], timeout_s: float | None,
             hard_timeout_s: float | None) -> list[SynthesisOutput]: ...


def parse_job(payload: object) -> Job:
    """Validate a payload against the contract; every problem becomes one clear :class:`BadInputError`."""
    if not isinstance(payload, dict):
        raise BadInputError("invalid_job", f"a job must be a JSON object, got {type(payload).__name__}")
    try:
        return Job.model_validate(payload)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        cause = (first.get("ctx") or {}).get("error")
        code = cause.code if isinstance(cause, BadInputError) else "invalid_job"
        summary = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'job'}: {e['msg']}" for e in errors[:5])
        raise BadInputError(code, summary, field) from None


def claimed_id(payload: object) -> str | None:
    job_id = payload.get("job_id") if isinstance(payload, dict) else None
    return job_id if isinstance(job_id, str) and len(job_id) <= 128 else None


def job_id_of(payload: object, fallback: str) -> str:
    """The id a dead letter is filed under: the job's own, else the id it claims, else the caller's fallback."""
    try:
        return parse_job(payload).resolved_job_id()
    except BadInputError:
        return claimed_id(payload) or fallback


class InFlight:
    """Output keys being produced in this process right now.

    Redis hands a message out again when it stays unacknowledged past the visibility timeout, even to the worker that
    still runs it; a producer or a client may also send the same job twice. A second delivery of a job this process is
    already producing waits for the first to end, then finds its audio stored and skips: one execution, not two.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, threading.Event] = {}

    def claim(self, key: str) -> threading.Event | None:
        """None if the key is now ours; else the event of the run that holds it."""
        with self._lock:
            holder = self._running.get(key)
            if holder is None:
                self._running[key] = threading.Event()
            return holder

    def release(self, key: str) -> None:
        with self._lock:
            event = self._running.pop(key, None)
        if event is not None:
            event.set()


class JobRunner:
    """Runs jobs on the worker's engines and one storage. One per worker process, shared by its task threads."""

    def __init__(self, engines: Engines, storage: Storage, references: ReferenceStore, lost_runs: LostRuns,
                 max_lost_runs: int = 3) -> None:
        self.engines = engines
        self.storage = storage
        self.references = references
        self.lost_runs = lost_runs
        self.max_lost_runs = max_lost_runs
        self.in_flight = InFlight()

    def job_hash(self, job: Job) -> str:
        return job.job_hash(self.engines.fingerprint, job_precision(self.engines.precision, job.params.use_fp16))

    def run(self, payloads: Sequence[object], queue_s: float | None = None,
            limits: RunLimits = RunLimits()) -> list[JobOutcome]:
        outcomes: list[JobOutcome | None] = [None] * len(payloads)
        jobs: list[tuple[int, Job]] = []
        for index, payload in enumerate(payloads):
            try:
                jobs.append((index, parse_job(payload)))
            except BadInputError as exc:
                outcomes[index] = JobOutcome(claimed_id(payload), error=exc)
        claimed = self._claim([job for _, job in jobs])
        try:
            self._run(jobs, outcomes, queue_s, limits)
        finally:
            for key in claimed:
                self.in_flight.release(key)
        return [outcome for outcome in outcomes if outcome is not None]

    def _claim(self, jobs: list[Job]) -> list[str]:
        """Take the jobs' output keys; wait first for any this process is already producing."""
        claimed: list[str] = []
        for key in dict.fromkeys(job.resolved_key() for job in jobs):
            while (holder := self.in_flight.claim(key)) is not None:
                holder.wait()
            claimed.append(key)
        return claimed

    def _run(self, jobs: list[tuple[int, Job]], outcomes: list[JobOutcome | None], queue_s: float | None,
             limits: RunLimits) -> None:
        lost = self.lost_runs.counts([job.resolved_job_id() for _, job in jobs])
        submitted = []
        for index, job in jobs:
            outcome = self._before_engine(job, lost.get(job.resolved_job_id(), 0), queue_s)
            if outcome is not None:
                outcomes[index] = outcome
                continue
            try:
                request = self._request(job)
            except (BadInputError, TransientError) as exc:
                outcomes[index] = self._failed(job, exc)
                continue
            handle = self.engines.submit([request], [job.resolved_job_id()], priority=limits.priority,
                                         alone=lost.get(job.resolved_job_id(), 0) > 0)
            submitted.append((index, job, handle, time.monotonic()))
        for index, job, handle, handed_over in submitted:
            outcomes[index] = self._collect(job, handle, handed_over, queue_s, limits)

    def _before_engine(self, job: Job, lost: int, queue_s: float | None) -> JobOutcome | None:
        """Skipped (already stored), dead (lost too often), unreachable storage, or None: the job must run."""
        if lost >= self.max_lost_runs:
            return JobOutcome(job.resolved_job_id(), job.resolved_key(), error=WorkerLostError(
                f"the process running this job died {lost} times (F5_MAX_LOST_RUNS={self.max_lost_runs}); it is "
                "not run again"))
        try:
            return self._already_stored(job, queue_s)
        except (BadInputError, TransientError) as exc:
            return self._failed(job, exc)

    def _failed(self, job: Job, exc: Exception) -> JobOutcome:
        if isinstance(exc, BadInputError):
            return JobOutcome(job.resolved_job_id(), job.resolved_key(), error=exc)
        return JobOutcome(job.resolved_job_id(), job.resolved_key(), transient=exc)

    def _request(self, job: Job) -> SynthesisRequest:
        audio = self.references.get(job.voice.ref_audio)
        voice = VoiceInput(audio, job.voice.ref_text, job.voice.preprocess)
        return SynthesisRequest(job.text, voice, job.params, job.resolved_seed())

    def _collect(self, job: Job, handle, handed_over: float, queue_s: float | None,
                 limits: RunLimits) -> JobOutcome:
        try:
            output = self.engines.wait(handle, limits.timeout_s, limits.hard_timeout_s)[0]
        except (BadInputError, TransientError) as exc:
            return self._failed(job, exc)
        if output.error is not None:
            return self._failed(job, output.error)
        try:
            outcome = self._store(job, output, queue_s, time.monotonic() - handed_over)
        except (BadInputError, TransientError) as exc:
            return self._failed(job, exc)
        self.lost_runs.forget([job.resolved_job_id()])
        return outcome

    def _already_stored(self, job: Job, queue_s: float | None) -> JobOutcome | None:
        info = self.storage.head(job.resolved_key())
        if info is None or info.metadata.get(c.META_JOB_HASH) != self.job_hash(job):
            return None
        return JobOutcome(job.resolved_job_id(), info.key, self._result(job, info, queue_s), None, None,
                          float(info.metadata.get(c.META_DURATION, 0.0)))

    def _result(self, job: Job, info: ObjectInfo, queue_s: float | None, inference_s: float = 0.0,
                upload_s: float = 0.0, skipped: bool = True, batch_wait_s: float | None = None) -> JobResult:
        meta = info.metadata
        duration = float(meta.get(c.META_DURATION, 0.0))
        return JobResult(
            job_id=job.resolved_job_id(), key=info.key, bytes=info.size, sha256=meta.get(c.META_SHA256, ""),
            duration_s=duration, sample_rate=c.SAMPLE_RATE, seed=job.resolved_seed(), skipped=skipped,
            timings=Timings(queue_s=queue_s, inference_s=inference_s, upload_s=upload_s, batch_wait_s=batch_wait_s),
            rtf=(inference_s / duration) if duration and not skipped else None,
            precision=meta.get(c.META_PRECISION, ""), model=meta.get(c.META_MODEL, ""), metadata=job.metadata)

    def _store(self, job: Job, output: SynthesisOutput, queue_s: float | None, waited_s: float) -> JobOutcome:
        data = encode_wav(output.waveform, output.sample_rate)
        metadata = self._metadata(job, output, data)
        start = time.perf_counter()
        self.storage.put(job.resolved_key(), data, metadata, content_type="audio/wav")
        upload_s = time.perf_counter() - start
        info = ObjectInfo(job.resolved_key(), len(data), metadata)
        result = self._result(job, info, queue_s, output.inference_s, upload_s, skipped=False,
                              batch_wait_s=max(0.0, waited_s - output.inference_s))
        return JobOutcome(job.resolved_job_id(), info.key, result, None, None, output.duration_s)

    def _metadata(self, job: Job, output: SynthesisOutput, data: bytes) -> dict[str, Any]:
        return {
            c.META_JOB_ID: job.resolved_job_id(),
            c.META_JOB_HASH: self.job_hash(job),
            c.META_TEXT_SHA256: hashlib.sha256(job.text.encode("utf-8")).hexdigest(),
            c.META_SEED: str(job.resolved_seed()),
            c.META_MODEL: self.engines.model_name,
            c.META_PARAMS_HASH: job.params_hash(),
            c.META_SHA256: hashlib.sha256(data).hexdigest(),
            c.META_DURATION: f"{output.duration_s:.6f}",
            c.META_PRECISION: output.precision,
        }
