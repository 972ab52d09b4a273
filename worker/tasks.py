"""The Celery tasks: thin glue between the contract, the job runner and Celery's retry machinery.

``f5tts.synthesize`` takes ``kwargs={"job": {...}}``; ``f5tts.synthesize_batch`` takes ``kwargs={"jobs": [...]}`` and
returns one entry per job (a bad item fails alone). Bad input fails at once and is never retried; transient faults are
retried with exponential backoff and jitter. Jobs that fail for good are recorded as dead letters.
"""

from __future__ import annotations

import logging
import shutil
import time
from typing import Any

from celery import Task

from worker.app import app, settings
from worker.constants import ENQUEUED_AT_HEADER, TASK_ASSEMBLE_CHAPTER, TASK_SYNTHESIZE, TASK_SYNTHESIZE_BATCH
from worker.contract import BatchItemResult, JobError
from worker.errors import BadInputError, TransientError
from worker.runtime import metrics
from worker.runtime.context import get_context
from worker.runtime.deadletter import DeadLetter
from worker.runtime.runner import JobOutcome, _claimed_id, parse_job

log = logging.getLogger(__name__)

MAX_BATCH_JOBS = 256


def _queue_seconds(request: Any) -> float | None:
    enqueued = request.get(ENQUEUED_AT_HEADER) if hasattr(request, "get") else None
    if enqueued is None:
        enqueued = (getattr(request, "headers", None) or {}).get(ENQUEUED_AT_HEADER)
    try:
        return max(0.0, time.time() - float(enqueued)) if enqueued is not None else None
    except (TypeError, ValueError):
        return None


def _job_id(payload: object, fallback: str) -> str:
    try:
        return parse_job(payload).resolved_job_id()
    except BadInputError:
        return _claimed_id(payload) or fallback


class F5Task(Task):
    """Retry policy and dead-letter bookkeeping shared by both tasks."""

    autoretry_for = (TransientError, ConnectionError, TimeoutError)
    dont_autoretry_for = (BadInputError,)
    throws = (BadInputError,)  # expected failures: logged in one line, without a traceback
    retry_backoff = True
    retry_backoff_max = settings.broker.retry_backoff_max
    retry_jitter = True
    max_retries = settings.broker.max_retries
    acks_late = True
    reject_on_worker_lost = True
    Request = "worker.broker.request:ValidatedRequest"

    def record_dead_letter(self, job_id: str, key: str | None, error: BadInputError | Exception) -> None:
        if isinstance(error, BadInputError):
            code, message, field = error.code, error.message, error.field
        else:
            code = "retries_exhausted" if isinstance(error, self.autoretry_for) else "internal_error"
            message, field = f"{type(error).__name__}: {error}", None
        letter = DeadLetter(job_id=job_id, key=key, task_id=self.request.id, task=self.name, code=code,
                            message=message[:2000], field=field, retries=self.request.retries or 0, at=time.time())
        get_context(settings).dead_letters.record(letter)

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        if not isinstance(exc, BadInputError):
            metrics.job_finished(None, "error")
        if self.name != TASK_SYNTHESIZE:
            return
        payload = (kwargs or {}).get("job")
        self.record_dead_letter(_job_id(payload, task_id), None, exc)
        log.warning("job %s failed for good: %s", task_id, exc)


def _unexpected(kind: str, unexpected: dict[str, Any]) -> BadInputError:
    return BadInputError("invalid_job", f"send kwargs={{'{kind}': ...}}; unexpected arguments: "
                         f"{', '.join(sorted(unexpected))}")


@app.task(name=TASK_SYNTHESIZE, bind=True, base=F5Task)
def synthesize(self: F5Task, job: Any = None, *args: Any, **unexpected: Any) -> dict:
    """Synthesise one job and store its WAV; returns the result (contract ``JobResult``)."""
    if job is None or args or unexpected:
        raise _unexpected("job", {**unexpected, **({"<positional>": args} if args else {})})
    context = get_context(settings)
    outcome = context.runner.run([job], queue_s=_queue_seconds(self.request))[0]
    _count(outcome)
    if outcome.error is not None:
        raise outcome.error
    context.dead_letters.clear([outcome.job_id])
    _track_chapter(outcome, context)
    return outcome.result.model_dump(mode="json")


def _track_chapter(outcome: JobOutcome, context) -> None:
    """If this segment belongs to a book assembled automatically, count it, and send the assembly when complete."""
    meta = outcome.result.metadata if outcome.result else {}
    book, chapter = meta.get("book"), meta.get("chapter")
    if not (isinstance(book, str) and isinstance(chapter, int) and meta.get("assemble")):
        return
    tracker = context.chapters
    try:
        if tracker.mark_stored(book, chapter, outcome.job_id):
            tracker.send_if_complete(app, book, chapter)
    except Exception as exc:  # bookkeeping must never fail a job whose audio is stored
        log.warning("could not update chapter progress for %s %s: %s", book, chapter, exc)


def _count(outcome: JobOutcome) -> None:
    if outcome.error is not None:
        metrics.job_finished(None, "bad_input")
    else:
        metrics.job_finished(outcome.result, "skipped" if outcome.result.skipped else "ok")


def _item(outcome: JobOutcome) -> dict:
    error = JobError(**outcome.error.as_dict()) if outcome.error else None
    return BatchItemResult(job_id=outcome.job_id, ok=outcome.error is None, result=outcome.result,
                           error=error).model_dump(mode="json")


@app.task(name=TASK_SYNTHESIZE_BATCH, bind=True, base=F5Task)
def synthesize_batch(self: F5Task, jobs: Any = None, *args: Any, **unexpected: Any) -> list[dict]:
    """Synthesise several jobs in batched passes; one result entry per job, in order."""
    if jobs is None or args or unexpected:
        raise _unexpected("jobs", {**unexpected, **({"<positional>": args} if args else {})})
    if not isinstance(jobs, list) or not jobs or len(jobs) > MAX_BATCH_JOBS:
        raise BadInputError("invalid_job", f"jobs must be a list of 1 to {MAX_BATCH_JOBS} job objects", "jobs")
    context = get_context(settings)
    outcomes = context.runner.run(jobs, queue_s=_queue_seconds(self.request))
    for outcome in outcomes:
        _count(outcome)
    for index, outcome in enumerate(outcomes):
        if outcome.error is not None:
            self.record_dead_letter(outcome.job_id or f"{self.request.id}:{index}", outcome.key, outcome.error)
    context.dead_letters.clear([o.job_id for o in outcomes if o.error is None and o.job_id])
    for outcome in outcomes:
        if outcome.error is None:
            _track_chapter(outcome, context)
    return [_item(outcome) for outcome in outcomes]


@app.task(name=TASK_ASSEMBLE_CHAPTER, bind=True, acks_late=True, autoretry_for=(TransientError, ConnectionError),
          retry_backoff=True, max_retries=settings.broker.max_retries)
def assemble_chapter(self: Task, book: str, chapter: int) -> dict:
    """Stitch one completed chapter (runs on the CPU queue; needs no engine)."""
    from worker.assembly.stitch import AssembleOptions, new_workdir
    from worker.assembly.stitch import assemble_chapter as assemble
    from worker.books.manifest import ManifestEntry
    from worker.runtime.chapters import ChapterTracker
    from worker.storage import by_url

    tracker = ChapterTracker(settings.broker.resolved_result_backend)
    entries, options = tracker.spec(book, chapter)
    storage = by_url(settings.storage.storage_url, settings.storage)
    workdir = new_workdir()
    try:
        result = assemble(storage, options["prefix"], book, [ManifestEntry.model_validate(e) for e in entries],
                          AssembleOptions(fmt=options.get("format", "wav")), workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"book": book, "chapter": chapter, "key": result.key, "duration_s": result.duration_s,
            "bytes": result.bytes}
