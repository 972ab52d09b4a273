"""From job payloads to stored audio: validate, skip what is already stored, synthesise together, upload.

Celery-free and torch-free (the engine is passed in), so the tasks stay thin and this logic is testable on its own.
Bad input ends that one job with a :class:`BadInputError`; transient faults (storage down) propagate, and the task
retries the whole call, which is safe because a redelivered job finds its finished audio and skips it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from worker import constants as c
from worker.audio import encode_wav
from worker.contract import Job, JobResult, Timings
from worker.engine.types import SynthesisEngine, SynthesisOutput, SynthesisRequest, VoiceInput
from worker.errors import BadInputError
from worker.runtime.references import VoiceStore
from worker.storage import ObjectInfo, Storage

log = logging.getLogger(__name__)


@dataclass
class JobOutcome:
    job_id: str | None
    key: str | None = None
    result: JobResult | None = None
    error: BadInputError | None = None
    duration_s: float = 0.0


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


def _claimed_id(payload: object) -> str | None:
    job_id = payload.get("job_id") if isinstance(payload, dict) else None
    return job_id if isinstance(job_id, str) and len(job_id) <= 128 else None


class JobRunner:
    """Runs jobs on one engine and one storage. One per worker process."""

    def __init__(self, engine: SynthesisEngine, storage: Storage, voices: VoiceStore) -> None:
        self.engine = engine
        self.storage = storage
        self.voices = voices

    def run(self, payloads: Sequence[object], queue_s: float | None = None) -> list[JobOutcome]:
        outcomes: list[JobOutcome | None] = [None] * len(payloads)
        pending: list[tuple[int, Job, SynthesisRequest]] = []
        for index, payload in enumerate(payloads):
            try:
                job = parse_job(payload)
            except BadInputError as exc:
                outcomes[index] = JobOutcome(_claimed_id(payload), error=exc)
                continue
            skipped = self._already_stored(job, queue_s)
            if skipped is not None:
                outcomes[index] = skipped
                continue
            try:
                audio = self.voices.get(job.voice.ref_audio)
            except BadInputError as exc:
                outcomes[index] = JobOutcome(job.resolved_job_id(), job.resolved_key(), error=exc)
                continue
            voice = VoiceInput(audio, job.voice.ref_text, job.voice.preprocess)
            pending.append((index, job, SynthesisRequest(job.text, voice, job.params, job.resolved_seed())))
        if pending:
            outputs = self.engine.synthesize([request for _, _, request in pending])
            for (index, job, _), output in zip(pending, outputs, strict=True):
                if output.error is not None:
                    outcomes[index] = JobOutcome(job.resolved_job_id(), job.resolved_key(), error=output.error)
                else:
                    outcomes[index] = self._store(job, output, queue_s)
        return [outcome for outcome in outcomes if outcome is not None]

    def _already_stored(self, job: Job, queue_s: float | None) -> JobOutcome | None:
        info = self.storage.head(job.resolved_key())
        if info is None or info.metadata.get(c.META_JOB_HASH) != job.job_hash(self.engine.model_name):
            return None
        return JobOutcome(job.resolved_job_id(), info.key, self._result(job, info, queue_s), None,
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

    def _store(self, job: Job, output: SynthesisOutput, queue_s: float | None) -> JobOutcome:
        data = encode_wav(output.waveform, output.sample_rate)
        metadata = self._metadata(job, output, data)
        start = time.perf_counter()
        self.storage.put(job.resolved_key(), data, metadata, content_type="audio/wav")
        upload_s = time.perf_counter() - start
        info = ObjectInfo(job.resolved_key(), len(data), metadata)
        result = self._result(job, info, queue_s, output.inference_s, upload_s, skipped=False,
                              batch_wait_s=output.wait_s)
        return JobOutcome(job.resolved_job_id(), info.key, result, None, output.duration_s)

    def _metadata(self, job: Job, output: SynthesisOutput, data: bytes) -> dict[str, Any]:
        return {
            c.META_JOB_ID: job.resolved_job_id(),
            c.META_JOB_HASH: job.job_hash(self.engine.model_name),
            c.META_TEXT_SHA256: hashlib.sha256(job.text.encode("utf-8")).hexdigest(),
            c.META_SEED: str(job.resolved_seed()),
            c.META_MODEL: self.engine.model_name,
            c.META_PARAMS_HASH: job.params_hash(),
            c.META_SHA256: hashlib.sha256(data).hexdigest(),
            c.META_DURATION: f"{output.duration_s:.6f}",
            c.META_PRECISION: output.precision,
        }
