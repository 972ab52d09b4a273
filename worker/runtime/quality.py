"""Best of N: what happens after a take is judged. Torch-free and Celery-free; the tasks carry out what it says.

A take's verdict (``worker.qa.gate``) is added to its segment's record (``worker.runtime.takes``), once: a redelivered
check finds its attempt there and changes nothing. The decision comes from the recorded takes with the gate's own
rule: a passing take ends the segment; otherwise another take is rendered, with a seed derived from the attempt
number, until ``max_attempts``; then the segment needs review, its best take kept. The kept take is copied to the
segment's key when it is not the one there (takes after the first are stored beside it), so a segment's key always
holds its best take and a worse take never replaces a better one. Takes rendered by hand (the review page, ``f5-batch
rerender``) are judged the same way but never lead to more automatic takes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from worker.contract import Job
from worker.qa.gate import Attempt, Decision, Verdict, decide
from worker.runtime.takes import SegmentTakes, State, TakeRecord, TakeRecords
from worker.storage import Storage

log = logging.getLogger(__name__)

FINAL: tuple[State, ...] = ("passed", "rerendered", "needs_review", "accepted")


@dataclass(frozen=True)
class Settled:
    """A segment after one of its takes was judged, and what is left to do."""

    record: SegmentTakes
    decision: Decision
    send: Job | None  # the next take to render
    promote: TakeRecord | None  # the take to copy to the segment's key

    @property
    def final(self) -> bool:
        return self.record.state in FINAL


def _decision(record: SegmentTakes) -> Decision:
    attempts = [Attempt(attempt=t.attempt, seed=t.seed, verdict=t.verdict) for t in record.attempts]
    manual = any(t.manual for t in record.attempts)
    limit = len(attempts) if manual else record.max_attempts  # takes by hand never lead to more automatic ones
    return decide(attempts, max(limit, 1))


def _state(record: SegmentTakes, decision: Decision) -> State:
    if decision.action == "rerender":
        return "pending"
    if decision.action == "needs_review":
        return "needs_review"
    return "passed" if decision.best is not None and decision.best.attempt == 1 else "rerendered"


def _fresh(job: Job) -> SegmentTakes:
    assert job.qa is not None
    first = job.model_copy(update={"qa": job.qa.model_copy(update={"attempt": 1, "seed": None, "manual": False})})
    return SegmentTakes(book=job.metadata.get("book"), key=job.resolved_key(), job_id=job.resolved_job_id(),
                        text=job.text, lang=job.qa.lang, max_attempts=job.qa.max_attempts, asr=job.qa.asr,
                        job=first.model_dump(mode="json", exclude_none=True))


def settle(records: TakeRecords, job: Job, verdict: Verdict, manual: bool = False) -> Settled:
    """Record one take's verdict (once) and decide what comes next."""
    assert job.qa is not None
    attempt = job.qa.attempt

    def change(current: SegmentTakes | None) -> SegmentTakes | None:
        record = current if current is not None and current.text == job.text else _fresh(job)
        if record.take(attempt) is not None:
            return None if record is current else record
        record.attempts.append(TakeRecord(attempt=attempt, seed=job.resolved_seed(), key=job.store_key(),
                                          verdict=verdict, manual=manual))
        record.attempts.sort(key=lambda t: t.attempt)
        decision = _decision(record)
        record.best = decision.best.attempt if decision.best is not None else None
        record.state = _state(record, decision)
        return record

    record = records.update(job.metadata.get("book"), job.resolved_key(), change)
    assert record is not None
    return _next_steps(record, job)


def _next_steps(record: SegmentTakes, job: Job) -> Settled:
    decision = _decision(record)
    send = None
    if decision.action == "rerender" and decision.next_attempt is not None \
            and record.take(decision.next_attempt) is None:
        assert job.qa is not None
        send = job.model_copy(update={"qa": job.qa.model_copy(update={"attempt": decision.next_attempt,
                                                                        "seed": None, "manual": False})})
    promote = record.kept if record.state in FINAL and record.best not in (None, record.at_key) else None
    return Settled(record, decision, send, promote)


def promote(records: TakeRecords, storage: Storage, record: SegmentTakes, take: TakeRecord) -> SegmentTakes:
    """Copy a kept take to the segment's key, then note that it is there (a copy repeated after a crash writes the
    same bytes again)."""
    info = storage.head(take.key)
    if info is None:
        raise FileNotFoundError(f"the take {take.key!r} is no longer in storage")
    storage.put(record.key, storage.get(take.key), info.metadata, content_type="audio/wav")
    log.info("kept take %d of %s (score %.2f) at %s", take.attempt, record.job_id, take.verdict.score, record.key)

    def noted(current: SegmentTakes | None) -> SegmentTakes | None:
        if current is None or current.take(take.attempt) is None:
            return None
        current.at_key = take.attempt
        return current

    return records.update(record.book, record.key, noted) or record
