"""The Celery tasks: thin glue between the contract, the job runner and Celery's retry machinery.

``f5tts.synthesize`` takes ``kwargs={"job": {...}}``; ``f5tts.synthesize_batch`` takes ``kwargs={"jobs": [...]}`` and
returns one entry per job. Failure is explicit, so that its record comes first:

- bad input (and a time limit, and a job whose process died every time) fails at once and is never retried;
- transient faults (storage, broker, a lost engine process) are retried with exponential backoff and jitter;
- a job that fails for good is written to the dead letters *before* the task raises, so a client that reads the
  FAILURE always finds its letter (Celery would store the failure first and call ``on_failure`` after);
- a batch where some jobs failed ends FAILURE with ``BatchPartialFailure``, whose arguments hold every job's entry:
  Flower's "Failed" filter shows it, and clients still get the results of the jobs that succeeded.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from typing import Any

from celery import Task
from celery.exceptions import Reject, Retry
from celery.utils.time import get_exponential_backoff_interval

from worker.celery_app import app, settings
from worker.constants import ENQUEUED_AT_HEADER, TASK_ASSEMBLE_CHAPTER, TASK_SYNTHESIZE, TASK_SYNTHESIZE_BATCH
from worker.contract import MAX_BATCH_JOBS, BatchItemResult, JobError, batch_work_problem
from worker.errors import BadInputError, BatchPartialFailure, TransientError
from worker.runtime import metrics
from worker.runtime.context import WorkerContext, get_context
from worker.runtime.deadletter import DeadLetter
from worker.runtime.runner import JobOutcome, RunLimits, identity_of, job_id_of, parse_job

log = logging.getLogger(__name__)

RETRIED = (TransientError, ConnectionError, TimeoutError)
_flush_failed = threading.local()  # per task thread: a flush of its task's audio that failed before it returned
RETRY_PUBLISH_PAUSES_S = (1.0, 2.0, 4.0)  # between attempts to publish a retry that the broker refused


def _queue_seconds(request: Any) -> float | None:
    enqueued = request.get(ENQUEUED_AT_HEADER) if hasattr(request, "get") else None
    if enqueued is None:
        enqueued = (getattr(request, "headers", None) or {}).get(ENQUEUED_AT_HEADER)
    try:
        return max(0.0, time.time() - float(enqueued)) if enqueued is not None else None
    except (TypeError, ValueError):
        return None


class F5Task(Task[Any, Any]):
    """What both synthesis tasks share: limits, dead letters, and the retry decision."""

    acks_late = True
    reject_on_worker_lost = True
    throws = (BadInputError, BatchPartialFailure)  # expected failures: logged in one line, without a traceback
    max_retries: int | None = settings.broker.max_retries
    Request = "worker.broker.request:ValidatedRequest"

    @property
    def task_id(self) -> str:
        """The running task's id; Celery leaves it None when the task is called as a plain function."""
        return self.request.id or "direct-call"

    def limits(self) -> RunLimits:
        hard, soft = self.request.timelimit or (None, None)
        priority = (self.request.delivery_info or {}).get("priority")
        return RunLimits(timeout_s=soft or settings.broker.task_soft_time_limit,
                         hard_timeout_s=hard or settings.broker.task_time_limit,
                         priority=priority if isinstance(priority, int) else 0)

    def letter(self, identity: str, job_id: str, key: str | None, error: BaseException) -> DeadLetter:
        if isinstance(error, BadInputError):
            code, message, field = error.code, error.message, error.field
        else:
            code = "retries_exhausted" if isinstance(error, RETRIED) else "internal_error"
            message, field = f"{type(error).__name__}: {error}", None
        return DeadLetter(identity=identity, job_id=job_id, key=key, task_id=self.request.id, task=self.name,
                          code=code, message=message[:2000], field=field, retries=self.request.retries or 0,
                          at=time.time())

    def outcome_letter(self, outcome: JobOutcome, fallback: str) -> DeadLetter:
        error = outcome.error or outcome.transient
        assert error is not None
        return self.letter(outcome.identity or f"unparsed:{fallback}", outcome.job_id or fallback, outcome.key, error)

    def payload_letter(self, payload: Any, fallback: str, error: BaseException) -> DeadLetter:
        try:
            job = parse_job(payload)
        except BadInputError:
            return self.letter(identity_of(payload, fallback), job_id_of(payload, fallback), None, error)
        return self.letter(job.identity(), job.resolved_job_id(), job.resolved_key(), error)

    def record(self, letters: list[DeadLetter]) -> None:
        """Write dead letters before the failure becomes visible; if Redis cannot take them, retry the task."""
        try:
            get_context().dead_letters.record(letters)
        except Exception as exc:
            log.error("could not record %d dead letter(s) (%s); retrying the task so none is lost", len(letters), exc)
            self.retry_later(TransientError(f"dead letters could not be recorded: {exc}"))

    def settle_before_ack(self) -> bool:
        """Called by the worker's request (``worker.broker.request``) after the task's state is stored and before its
        message is acknowledged: the audio it stored is on disk (local storage flushes a job's audio after its result,
        so that its caller does not wait for the flush). False when it could not be flushed: the message goes back to
        its queue, and the job, whose audio is left without metadata, runs again."""
        try:
            storage = get_context().storage
        except RuntimeError:  # no engines in this process: nothing was stored
            return True
        earlier = _flush_failed.__dict__.pop("error", None)  # a flush that failed before the task returned
        try:
            storage.settle()
            if earlier is not None:
                raise earlier
        except Exception as exc:
            log.error("the audio stored by task %s could not be flushed to disk (%s); its message goes back to the "
                      "queue and its job runs again", self.request.id, exc)
            return False
        return True

    def retry_later(self, exc: Exception) -> None:
        """Retry with backoff. If the retry cannot be published (a Redis at ``maxmemory`` with ``noeviction``
        refuses writes), Celery would reject the message without requeueing it, and the job would be gone. Instead
        the publish is tried again a few times; then the message goes back to its queue, and if Redis refuses even
        that, it stays recorded as unacknowledged, where the visibility-timeout sweep finds it: never lost."""
        self.settle_before_ack()  # a batch's jobs stored before it retries: on disk before its message is acknowledged
        countdown = get_exponential_backoff_interval(factor=1, retries=self.request.retries,
                                                     maximum=settings.broker.retry_backoff_max, full_jitter=True)
        refused: Reject | None = None
        for pause in RETRY_PUBLISH_PAUSES_S:
            try:
                raise self.retry(exc=exc, countdown=countdown)
            except Reject as rejected:  # the retry message was not published
                refused = rejected
                log.warning("could not publish the retry of %s (%s); trying again in %.0f s", self.request.id,
                            rejected.reason, pause)  # type: ignore[attr-defined]  # celery sets it; its stubs omit it
                time.sleep(pause)
        reason = refused.reason if refused else exc  # type: ignore[attr-defined]  # celery sets it; its stubs omit it
        log.error("the retry of %s could not be published (%s); the message goes back to its queue instead",
                  self.request.id, reason)
        raise Reject(reason, requeue=True)

    def can_retry(self) -> bool:
        return self.max_retries is None or (self.request.retries or 0) < self.max_retries


def _unexpected(kind: str, unexpected: dict[str, Any]) -> BadInputError:
    return BadInputError("invalid_job", f"send kwargs={{'{kind}': ...}}; unexpected arguments: "
                         f"{', '.join(sorted(unexpected))}")


def _count(outcome: JobOutcome, context: WorkerContext) -> None:
    if outcome.error is not None:
        metrics.job_finished(None, outcome.error.code if outcome.error.code in ("time_limit", "worker_lost")
                             else "bad_input")
        if outcome.error.code in ("time_limit", "worker_lost"):
            context.health.job_ended(False, str(outcome.error))
    elif outcome.transient is not None:
        metrics.job_finished(None, "retried")
        context.health.job_ended(False, f"{type(outcome.transient).__name__}: {outcome.transient}")
    else:
        result = outcome.result
        metrics.job_finished(result, "skipped" if result is not None and result.skipped else "ok")
        context.health.job_ended(True)


def _track_chapter(outcome: JobOutcome, context: WorkerContext) -> None:
    """If this segment belongs to a book assembled automatically, count it, and send the assembly when complete.
    (A segment under the quality gate is counted when its gate is done, with its kept take: ``worker.qa_tasks``.)"""
    if outcome.job is not None and outcome.job.qa is not None:
        return
    meta = outcome.result.metadata if outcome.result else {}
    book, chapter = meta.get("book"), meta.get("chapter")
    if not (isinstance(book, str) and isinstance(chapter, int) and meta.get("assemble")):
        return
    tracker = context.chapters
    try:
        if outcome.key and tracker.mark_stored(book, chapter, outcome.key):
            tracker.send_if_complete(app, book, chapter)
    except Exception as exc:  # bookkeeping must never fail a job whose audio is stored
        log.warning("could not update chapter progress for %s %s: %s", book, chapter, exc)


def _succeeded(outcomes: list[JobOutcome], context: WorkerContext) -> None:
    stored = [o for o in outcomes if o.error is None and o.transient is None]
    context.background(context.dead_letters.clear, [o.identity for o in stored if o.identity])
    if any(o.job is not None and (o.job.qa is not None or o.job.metadata.get("assemble")) for o in stored):
        # what follows reads the takes in other processes (a QA worker, the assembler): flushed, with metadata, first
        try:
            context.storage.settle()
        except Exception as exc:
            log.warning("could not flush the audio of %d job(s) before their checks and chapters (%s)", len(stored),
                        exc)
            _flush_failed.error = exc  # said again before the message would be acknowledged
    for outcome in stored:
        _track_chapter(outcome, context)
    _quality(stored, context)


def _quality(stored: list[JobOutcome], context: WorkerContext) -> None:
    """Takes under the quality gate: signal checks here, or one check message to the QA queue for a recogniser.
    Never fails the job: its take is stored, and ``f5-batch check`` judges what was missed."""
    from worker.qa_tasks import send_checks, signal_only

    gated = [(o, o.job, o.job.qa, o.key) for o in stored if o.job is not None and o.job.qa is not None and o.key]
    try:
        send_checks([(job, key) for _, job, qa, key in gated if qa.asr])
        for outcome, job, qa, key in gated:
            if not qa.asr:
                reference = context.runner.references.get(job.voice.ref_audio, job.voice.sha256)
                signal_only(job, key, outcome.signal, context.storage, context.takes, context.chapters,
                            context.runner.voices, reference)
    except Exception as exc:
        log.warning("the quality gate could not judge %d take(s) now (%s); `f5-batch check` judges them later",
                    len(gated), exc)


@app.task(name=TASK_SYNTHESIZE, bind=True, base=F5Task)
def synthesize(self: F5Task, job: Any = None, *args: Any, **unexpected: Any) -> dict[str, Any]:
    """Synthesise one job and store its WAV; returns the result (contract ``JobResult``)."""
    try:
        if job is None or args or unexpected:
            raise _unexpected("job", {**unexpected, **({"<positional>": args} if args else {})})
        context = get_context()
        outcome = context.runner.run([job], queue_s=_queue_seconds(self.request), limits=self.limits())[0]
    except Retry:
        raise
    except BadInputError as exc:
        outcome = JobOutcome(job_id_of(job, self.task_id), error=exc, identity=identity_of(job, self.task_id))
    except RETRIED as exc:
        outcome = JobOutcome(job_id_of(job, self.task_id), transient=exc, identity=identity_of(job, self.task_id))
    except Exception as exc:  # a bug, not the job's fault: recorded, then failed
        self.record([self.payload_letter(job, self.task_id, exc)])
        raise
    return _finish_single(self, job, outcome)


def _finish_single(task: F5Task, job: Any, outcome: JobOutcome) -> dict[str, Any]:
    context = get_context()
    _count(outcome, context)
    if outcome.transient is not None:
        if task.can_retry():
            task.retry_later(outcome.transient)
        task.record([task.outcome_letter(outcome, task.task_id)])
        raise outcome.transient
    if outcome.error is not None:
        task.record([task.outcome_letter(outcome, task.task_id)])
        raise outcome.error
    _succeeded([outcome], context)
    assert outcome.result is not None  # neither failed nor retried: stored
    return outcome.result.model_dump(mode="json")


def _item(outcome: JobOutcome) -> dict[str, Any]:
    error = outcome.error if outcome.error is not None else None
    if error is None and outcome.transient is not None:
        error = BadInputError("retries_exhausted", f"{type(outcome.transient).__name__}: {outcome.transient}")
    return BatchItemResult(job_id=outcome.job_id, ok=error is None, result=outcome.result,
                           error=JobError(**error.as_dict()) if error else None).model_dump(mode="json")


def _validate_batch(jobs: Any, args: tuple[Any, ...], unexpected: dict[str, Any]) -> list[Any]:
    if jobs is None or args or unexpected:
        raise _unexpected("jobs", {**unexpected, **({"<positional>": args} if args else {})})
    if not isinstance(jobs, list) or not jobs or len(jobs) > MAX_BATCH_JOBS:
        raise BadInputError("invalid_job", f"jobs must be a list of 1 to {MAX_BATCH_JOBS} job objects", "jobs")
    problem = batch_work_problem(jobs)
    if problem:
        raise BadInputError("invalid_job", problem, "jobs")
    return jobs


@app.task(name=TASK_SYNTHESIZE_BATCH, bind=True, base=F5Task)
def synthesize_batch(self: F5Task, jobs: Any = None, *args: Any, **unexpected: Any) -> list[dict[str, Any]]:
    """Synthesise several jobs (their chunks join the engines' passes like any others); one entry per job, in order.
    Raises ``BatchPartialFailure`` (after recording the dead letters) if any job failed for good."""
    payloads = jobs if isinstance(jobs, list) else []
    try:
        _validate_batch(jobs, args, unexpected)
        context = get_context()
        outcomes = context.runner.run(jobs, queue_s=_queue_seconds(self.request), limits=self.limits())
    except BadInputError as exc:  # the whole batch: every job it claims gets the letter
        self.record([self.payload_letter(p, f"{self.task_id}:{i}", exc) for i, p in enumerate(payloads)]
                    or [self.letter(f"unparsed:{self.task_id}", self.task_id, None, exc)])
        raise
    except Retry:
        raise
    except RETRIED as exc:
        outcomes = [JobOutcome(job_id_of(p, f"{self.task_id}:{i}"), transient=exc,
                               identity=identity_of(p, f"{self.task_id}:{i}")) for i, p in enumerate(jobs)]
    except Exception as exc:
        self.record([self.payload_letter(p, f"{self.task_id}:{i}", exc) for i, p in enumerate(payloads)])
        raise
    return _finish_batch(self, outcomes)


def _finish_batch(task: F5Task, outcomes: list[JobOutcome]) -> list[dict[str, Any]]:
    context = get_context()
    for outcome in outcomes:
        _count(outcome, context)
    transient = [o.transient for o in outcomes if o.transient is not None]
    if transient and task.can_retry():  # stored jobs are skipped on the retry
        _succeeded(outcomes, context)
        task.retry_later(transient[0])
    failed = [(i, o) for i, o in enumerate(outcomes) if o.error is not None or o.transient is not None]
    task.record([task.outcome_letter(o, f"{task.task_id}:{i}") for i, o in failed])
    _succeeded(outcomes, context)
    items = [_item(outcome) for outcome in outcomes]
    if failed:
        reasons = "; ".join(f"{o.job_id or f'item {i}'}: {items[i]['error']['code']}" for i, o in failed[:5])
        raise BatchPartialFailure(f"{len(failed)} of {len(outcomes)} jobs failed ({reasons}); the others are "
                                  "stored", items)
    return items


@app.task(name=TASK_ASSEMBLE_CHAPTER, bind=True, acks_late=True, autoretry_for=(TransientError, ConnectionError),
          retry_backoff=True, max_retries=settings.broker.max_retries)
def assemble_chapter(self: Task[Any, Any], book: str, chapter: int) -> dict[str, Any]:
    """Stitch one completed chapter (runs on the CPU queue; needs no engine)."""
    from worker.assembly.stitch import AssembleOptions, new_workdir
    from worker.assembly.stitch import assemble_chapter as assemble
    from worker.books.manifest import ManifestEntry
    from worker.runtime.chapters import ChapterTracker
    from worker.storage import by_url

    tracker = ChapterTracker.for_results(settings.broker)
    entries, options = tracker.spec(book, chapter)
    storage = by_url(settings.storage.storage_url, settings.storage)
    workdir = new_workdir()
    try:
        result = assemble(storage, options["prefix"], book, [ManifestEntry.model_validate(e) for e in entries],
                          AssembleOptions(fmt=options.get("format", "wav")), workdir)
    except (TransientError, ConnectionError):
        raise  # retried (autoretry_for)
    except Exception:
        tracker.release(book, chapter)  # failed for good: a later trigger may try this version again
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"book": book, "chapter": chapter, "key": result.key, "duration_s": result.duration_s,
            "bytes": result.bytes}
