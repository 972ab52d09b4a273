"""The quality gate's Celery glue: checking takes, and carrying out what the best-of-N rule decides.

``f5tts.qa_check`` runs on the QA queue (``f5tts-qa``), on QA workers that may be CPU hosts or share the GPU host: it
never runs on a synthesis worker, so transcription never takes a pass from the GPU. A synthesis task sends one check
per message it ran (a producer batch's takes travel together and are transcribed together). Books whose gate is signal
checks only are judged in the synthesis worker's task thread instead: those checks are numpy over a waveform already
in memory, microseconds per second of audio.

After a verdict: the next take is sent to the synthesis queue (the seed follows the attempt number), the kept take is
copied to the segment's key, and a chapter assembled automatically is counted (or re-assembled) only once its
segments are final. Checks are idempotent: a redelivered check finds its take recorded and changes nothing.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import soundfile as sf
from celery import Task

from worker import constants as c
from worker.celery_app import app, settings
from worker.contract import Job
from worker.errors import BadInputError, TransientError
from worker.qa.gate import QALimits, Take, judge
from worker.qa.levels import VoiceLevels
from worker.runtime import qa_metrics
from worker.runtime.quality import Settled, promote, settle
from worker.runtime.takes import TakeRecords
from worker.storage import ObjectNotFound, Storage

log = logging.getLogger(__name__)


def limits_for(job: Job) -> QALimits:
    qa = job.qa
    assert qa is not None
    return QALimits(max_cer=qa.max_cer if qa.max_cer is not None else settings.qa.max_cer,
                    max_attempts=qa.max_attempts)


def language_of(job: Job) -> str:
    return (job.qa.lang if job.qa is not None and job.qa.lang else None) or "en"


def carry_out(settled: Settled, job: Job, storage: Storage, records: TakeRecords, chapters: Any) -> None:
    """Send the next take, keep the best, and count the chapter once the segment is final."""
    record = settled.record
    qa_metrics.settled(settled)
    if settled.send is not None:
        book = job.metadata.get("book")
        app.send_task(c.TASK_SYNTHESIZE, kwargs={"job": settled.send.model_dump(mode="json", exclude_none=True)},
                      queue=settings.broker.queue, priority=c.PRIORITY_BOOKS if book else c.PRIORITY_JOBS,
                      kwargsrepr=f"{{'job': {job.resolved_job_id()!r} take {settled.decision.next_attempt}}}")
    promoted = False
    if settled.promote is not None:
        record = promote(records, storage, record, settled.promote)
        promoted = True
    book, chapter = job.metadata.get("book"), job.metadata.get("chapter")
    if settled.final and job.metadata.get("assemble") and isinstance(book, str) and isinstance(chapter, int):
        try:
            if chapters.mark_stored(book, chapter, record.key):
                chapters.send_if_complete(app, book, chapter)
            elif promoted:  # a better take after the chapter was assembled: assemble it again
                chapters.release(book, chapter)
                chapters.send_if_complete(app, book, chapter)
        except Exception as exc:  # bookkeeping must never fail a check whose verdict is recorded
            log.warning("could not update chapter progress for %s %s: %s", book, chapter, exc)


def read_take(storage: Storage, job: Job, key: str) -> tuple[Any, int] | None:
    """The take's samples, if the object at ``key`` is a take of this job's text and voice (never score a take
    against another text: a key reused for new text, an edit that raced its check)."""
    info = storage.head(key)
    if info is None:
        return None
    meta = info.metadata
    import hashlib

    if meta.get(c.META_TEXT_SHA256) != hashlib.sha256(job.text.encode("utf-8")).hexdigest() or (
            job.voice.sha256 and meta.get(c.META_REF_SHA256) not in (None, job.voice.sha256)):
        log.warning("the object at %s is not a take of this job's text and voice; not checked", key)
        return None
    samples, rate = sf.read(io.BytesIO(storage.get(key)), dtype="float32")
    return samples, int(rate)


def signal_only(job: Job, key: str, signal: Any, storage: Storage, records: TakeRecords, chapters: Any,
                levels: VoiceLevels, reference: Any) -> None:
    """The gate without a recogniser, in the synthesis worker: the take's signal checks decide."""
    if signal is None:  # a take stored by an earlier delivery: checked from storage
        read = read_take(storage, job, key)
        if read is None:
            return
        samples, rate = read
        signal = levels.signal(job, reference, samples, rate, limits_for(job).signal)
    verdict = judge(signal, job.text, language_of(job), None, limits_for(job))
    carry_out(settle(records, job, verdict, manual=job.qa.manual if job.qa else False), job, storage, records, chapters)


def send_checks(takes: list[tuple[Job, str]]) -> None:
    """One QA message for the takes of one synthesis message: they are transcribed together."""
    if takes:
        app.send_task(c.TASK_QA_CHECK, queue=settings.qa.queue, priority=c.PRIORITY_BOOKS,
                      kwargs={"takes": [{"job": job.model_dump(mode="json", exclude_none=True), "key": key}
                                        for job, key in takes]},
                      kwargsrepr=f"{{'takes': {len(takes)} from {takes[0][0].resolved_job_id()!r}}}")


@app.task(name=c.TASK_QA_CHECK, bind=True, acks_late=True, reject_on_worker_lost=True,
          max_retries=settings.broker.max_retries)
def qa_check(self: Task[Any, Any], takes: Any = None) -> list[dict[str, Any]]:
    """Check takes: signal checks and the recogniser's transcript, then the best-of-N decision for each."""
    from worker.runtime.qa_context import get_qa_context

    context = get_qa_context()
    if not isinstance(takes, list) or not takes:
        raise BadInputError("invalid_job", "send kwargs={'takes': [{'job': {...}, 'key': '...'}]}", "takes")
    try:
        jobs = [(Job.model_validate(item["job"]), str(item["key"])) for item in takes]
        loaded = []
        for job, key in jobs:
            if job.qa is None:
                raise BadInputError("invalid_job", "a take to check needs its job's qa settings", "takes.job.qa")
            read = read_take(context.storage, job, key)
            if read is not None:
                loaded.append((job, key, read))
        references = {}
        for job, _, _ in loaded:
            if job.voice.ref_audio not in references:
                references[job.voice.ref_audio] = context.storage.get(job.voice.ref_audio)
        checks = [Take(samples, rate, job.text, language_of(job),
                       context.levels.level(job.voice.sha256 or job.voice.ref_audio, references[job.voice.ref_audio]))
                  for job, _, (samples, rate) in loaded]
        verdicts = context.batcher.assess(checks, [limits_for(job) for job, _, _ in loaded])
        out = []
        for (job, key, _), verdict in zip(loaded, verdicts, strict=True):
            settled = settle(context.records, job, verdict, manual=job.qa.manual if job.qa else False)
            carry_out(settled, job, context.storage, context.records, context.chapters)
            out.append({"key": key, "attempt": job.qa.attempt if job.qa else 1, "passed": verdict.passed,
                        "cer": verdict.cer, "state": settled.record.state})
        return out
    except (TransientError, ConnectionError, ObjectNotFound, OSError) as exc:
        raise self.retry(exc=exc, countdown=min(60, 2 ** (self.request.retries or 0))) from exc
