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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from worker import constants as c
from worker.audio import as_float, encode_wav, wav_in_place
from worker.contract import Job, JobResult, Timings
from worker.engine.precision import Precision, job_precision
from worker.engine.types import SynthesisOutput, SynthesisRequest, VoiceInput
from worker.errors import BadInputError, SharedTimeLimitError, TransientError, WorkerLostError
from worker.qa.levels import VoiceLevels
from worker.qa.signal import SignalReport
from worker.runtime.deliveries import LostRuns
from worker.runtime.references import Reference, ReferenceStore
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
    identity: str | None = None  # Job.identity(): what dead letters are filed under (None: the job did not parse)
    job: Job | None = None  # the parsed job, for what follows a stored segment (chapters, quality checks)
    signal: SignalReport | None = None  # the take's signal checks, when the job asks for the quality gate


@dataclass(frozen=True)
class RunLimits:
    """How long one job may take (the task's soft and hard time limits), and its queue priority."""

    timeout_s: float | None = None
    hard_timeout_s: float | None = None
    priority: int = 0


class Engines(Protocol):
    """What the runner needs from the engine processes (``EngineHost``)."""

    @property
    def model_name(self) -> str: ...

    @property
    def precision(self) -> Precision: ...

    @property
    def fingerprint(self) -> str: ...

    def submit_many(self, tickets: Sequence[tuple[Sequence[SynthesisRequest], Sequence[str], bool]], *,
                    priority: int = 0) -> list[tuple[Any, Any]]: ...

    def wait_many(self, submitted: Sequence[tuple[Any, Any]], timeout_s: float | None,
                  hard_timeout_s: float | None) -> list[list[SynthesisOutput] | BaseException]: ...


def run_now(work: Callable[..., object], *args: Any) -> object:
    """Bookkeeping run at once, where no background thread is given."""
    return work(*args)


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
    """The id a dead letter shows: the job's own, else the id it claims, else the caller's fallback."""
    try:
        return parse_job(payload).resolved_job_id()
    except BadInputError:
        return claimed_id(payload) or fallback


def identity_of(payload: object, fallback: str) -> str:
    """What a dead letter is filed under: the job's identity (its output and content), else a fallback that cannot
    collide with another job's (the task id and the item's place in it)."""
    try:
        return parse_job(payload).identity()
    except BadInputError:
        return f"unparsed:{fallback}"


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
                 max_lost_runs: int = 3, background: Callable[..., object] | None = None,
                 settle_later: bool = True) -> None:
        self.engines = engines
        # a job's audio durable after its result, by the acknowledgement (worker.broker.request), not before it
        self.settle_later = settle_later
        # bookkeeping the job's result need not wait for (a thread, in order); run at once without one
        self.background = background or run_now
        self.storage = storage
        self.references = references
        self.lost_runs = lost_runs
        self.max_lost_runs = max_lost_runs
        self.in_flight = InFlight()
        self.voices = VoiceLevels()

    def job_hash(self, job: Job, clip: Reference) -> str:
        return job.job_hash(self.engines.fingerprint, job_precision(self.engines.precision, job.params.use_fp16),
                            clip.sha256)

    def run(self, payloads: Sequence[object], queue_s: float | None = None,
            limits: RunLimits = RunLimits()) -> list[JobOutcome]:
        outcomes: list[JobOutcome | None] = [None] * len(payloads)
        jobs: list[tuple[int, Job]] = []
        for index, payload in enumerate(payloads):
            try:
                jobs.append((index, parse_job(payload)))
            except BadInputError as exc:
                outcomes[index] = JobOutcome(claimed_id(payload), error=exc)
        unique, copies = _deduplicated(jobs)
        claimed = self._claim([job for _, job in unique])
        try:
            self._run(unique, outcomes, queue_s, limits)
        finally:
            for key in claimed:
                self.in_flight.release(key)
        for index, original in copies:  # the same job twice in one message: run once, reported for both
            outcomes[index] = outcomes[original]
        return [outcome for outcome in outcomes if outcome is not None]

    def _claim(self, jobs: list[Job]) -> list[str]:
        """Take the jobs' output keys; wait first for any this process is already producing."""
        claimed: list[str] = []
        for key in dict.fromkeys(job.store_key() for job in jobs):
            while (holder := self.in_flight.claim(key)) is not None:
                holder.wait()
            claimed.append(key)
        return claimed

    def _run(self, jobs: list[tuple[int, Job]], outcomes: list[JobOutcome | None], queue_s: float | None,
             limits: RunLimits) -> None:
        # the lost-run history is asked first and read after every job's skip check and reference: one round trip
        # that overlaps them
        history = self.lost_runs.ask_history([job.identity() for _, job in jobs])
        checked: list[tuple[int, Job, JobOutcome | Reference]] = []
        checks: dict[int, float] = {}
        try:
            for index, job in jobs:  # every job's skip check and reference first, so they reach the engine together
                started = time.perf_counter()
                try:
                    checked.append((index, job, self._before_engine(job, queue_s)))
                    checks[index] = time.perf_counter() - started
                except Exception as exc:  # a bug, not the job's fault: this job fails alone, its companions go on
                    log.exception("job %s failed before synthesis", job.resolved_job_id())
                    checked.append((index, job, self._outcome(job, error=_internal(exc))))
        finally:
            lost_runs = history()
        ready: list[tuple[int, Job, Reference, bool]] = []
        for index, job, prepared in checked:
            lost, alone = lost_runs.get(job.identity(), (0, False))
            if lost >= self.max_lost_runs:  # whatever else its checks found: it is not run again
                outcomes[index] = self._outcome(job, error=WorkerLostError(
                    f"the process running this job died {lost} times (F5_MAX_LOST_RUNS={self.max_lost_runs}); it is "
                    "not run again"))
            elif isinstance(prepared, JobOutcome):
                outcomes[index] = prepared
            else:
                ready.append((index, job, prepared, alone or lost > 0))
        if not ready:
            return
        handles = self.engines.submit_many([([self._request(job, clip)], [job.identity()], alone)
                                            for _, job, clip, alone in ready], priority=limits.priority)
        handed_over = time.monotonic()
        # all the message's jobs are waited for together: their time limits run side by side, not one after another
        for (index, job, clip, _), output in zip(ready, self.engines.wait_many(handles, limits.timeout_s,
                                                                              limits.hard_timeout_s), strict=True):
            try:
                outcomes[index] = self._collect(job, clip, output, handed_over, queue_s, checks.get(index))
            except Exception as exc:
                log.exception("job %s failed after synthesis", job.resolved_job_id())
                outcomes[index] = self._outcome(job, error=_internal(exc))

    def _before_engine(self, job: Job, queue_s: float | None) -> JobOutcome | Reference:
        """Skipped (already stored), unreachable storage or a bad reference; else the clip the job runs with."""
        try:
            clip = self.references.get(job.voice.ref_audio, job.voice.sha256)
            return self._already_stored(job, clip, queue_s) or clip
        except (BadInputError, TransientError) as exc:
            return self._failed(job, exc)

    def _outcome(self, job: Job, **fields: Any) -> JobOutcome:
        return JobOutcome(job.resolved_job_id(), job.store_key(), identity=job.identity(), job=job, **fields)

    def _failed(self, job: Job, exc: Exception) -> JobOutcome:
        if isinstance(exc, BadInputError):
            return self._outcome(job, error=exc)
        return self._outcome(job, transient=exc)

    def _request(self, job: Job, clip: Reference) -> SynthesisRequest:
        voice = VoiceInput(clip.data, job.voice.ref_text, job.voice.preprocess, clip.sha256)
        return SynthesisRequest(job.text, voice, job.params, job.resolved_seed())

    def _collect(self, job: Job, clip: Reference, waited: list[SynthesisOutput] | BaseException, handed_over: float,
                 queue_s: float | None, check_s: float | None = None) -> JobOutcome:
        if isinstance(waited, SharedTimeLimitError):  # not this job's fault: it runs alone next time, fails only then
            self.lost_runs.run_alone([job.identity()])
            return self._failed(job, waited)
        if isinstance(waited, (BadInputError, TransientError)):
            return self._failed(job, waited)
        if isinstance(waited, BaseException):
            raise waited
        output = waited[0]
        if output.error is not None:
            return self._failed(job, output.error)
        try:
            outcome = self._store(job, clip, output, queue_s, (output.received_at or time.monotonic()) - handed_over,
                                  check_s)
        except (BadInputError, TransientError) as exc:
            return self._failed(job, exc)
        # a moment later, on the ledger after the pass's own 'ended' count: nothing re-raises the count once it is
        # cleared
        self.background(self.lost_runs.forget, [job.identity()])
        return outcome

    def _already_stored(self, job: Job, clip: Reference, queue_s: float | None) -> JobOutcome | None:
        info = self.storage.head(job.store_key())
        if info is None or info.metadata.get(c.META_JOB_HASH) != self.job_hash(job, clip):
            return None
        return self._outcome(job, result=self._result(job, info, queue_s),
                             duration_s=float(info.metadata.get(c.META_DURATION, 0.0)))

    def _result(self, job: Job, info: ObjectInfo, queue_s: float | None, inference_s: float = 0.0,
                upload_s: float = 0.0, skipped: bool = True, batch_wait_s: float | None = None) -> JobResult:
        meta = info.metadata
        duration = float(meta.get(c.META_DURATION, 0.0))
        return JobResult(
            job_id=job.resolved_job_id(), key=info.key, bytes=info.size, sha256=meta.get(c.META_SHA256, ""),
            duration_s=duration, sample_rate=c.SAMPLE_RATE, seed=int(meta.get(c.META_SEED, job.resolved_seed())),
            skipped=skipped,
            timings=Timings(queue_s=queue_s, inference_s=inference_s, upload_s=upload_s, batch_wait_s=batch_wait_s),
            rtf=(inference_s / duration) if duration and not skipped else None,
            precision=meta.get(c.META_PRECISION, ""), model=meta.get(c.META_MODEL, ""), metadata=job.metadata)

    def _store(self, job: Job, clip: Reference, output: SynthesisOutput, queue_s: float | None,
               waited_s: float, check_s: float | None = None) -> JobOutcome:
        start = time.perf_counter()
        waveform = output.waveform
        assert waveform is not None  # an engine's output holds audio or an error (checked by the caller)
        # the file's buffer the samples were read into from the engine, or (an engine in this process) encoded here
        data = wav_in_place(output.wav, output.sample_rate) if output.wav is not None else \
            encode_wav(waveform, output.sample_rate)
        encoded = time.perf_counter()
        metadata = self._metadata(job, clip, output, data)
        # durable by the time the task's message is acknowledged, not before the result (F5Task.settle_before_ack)
        self.storage.put(job.store_key(), data, metadata, content_type="audio/wav", settle_later=self.settle_later)
        upload_s = time.perf_counter() - encoded
        info = ObjectInfo(job.store_key(), len(data), metadata)
        result = self._result(job, info, queue_s, output.inference_s, upload_s, skipped=False,
                              batch_wait_s=max(0.0, waited_s - output.inference_s))
        inside = output.prepare_s + output.wait_s + output.inference_s + output.finish_s
        result.timings = result.timings.model_copy(update={
            "check_s": check_s, "prepare_s": output.prepare_s, "engine_wait_s": output.wait_s,
            "finish_s": output.finish_s, "transfer_s": max(0.0, waited_s - inside), "encode_s": encoded - start})
        signal = self.voices.signal(job, clip, as_float(waveform), output.sample_rate) \
            if job.qa is not None else None
        return self._outcome(job, result=result, duration_s=output.duration_s, signal=signal)

    def _metadata(self, job: Job, clip: Reference, output: SynthesisOutput, data: bytes | bytearray) -> dict[str, str]:
        return {
            c.META_JOB_ID: job.resolved_job_id(),
            c.META_JOB_HASH: self.job_hash(job, clip),
            c.META_TEXT_SHA256: hashlib.sha256(job.text.encode("utf-8")).hexdigest(),
            c.META_SEED: str(job.resolved_seed()),
            c.META_MODEL: self.engines.model_name,
            c.META_PARAMS_HASH: job.params_hash(),
            c.META_SHA256: hashlib.sha256(data).hexdigest(),
            c.META_DURATION: f"{output.duration_s:.6f}",
            c.META_PRECISION: output.precision,
            c.META_REF_SHA256: clip.sha256,
        }


def _deduplicated(jobs: list[tuple[int, Job]]) -> tuple[list[tuple[int, Job]], list[tuple[int, int]]]:
    """The distinct jobs of a message (by identity), and (index, index of its first copy) for the repeats."""
    first: dict[str, int] = {}
    unique, copies = [], []
    for index, job in jobs:
        if job.identity() in first:
            copies.append((index, first[job.identity()]))
        else:
            first[job.identity()] = index
            unique.append((index, job))
    return unique, copies


def _internal(exc: Exception) -> BadInputError:
    return BadInputError("internal_error", f"{type(exc).__name__}: {exc}")
