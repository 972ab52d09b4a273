"""A book's quality, for people: counts for ``status``, the segments a person should hear, and what they may do about
one (keep its take, render it again, or fix its text). Torch-free: the CLI (``f5-batch review``, ``rerender``) and the
gateway's review page share it, so both do exactly the same.

A segment is *flagged* when no take passed its checks (``needs_review``), and stays listed while a take rendered by
hand is on its way. Accepting keeps the take at the segment's key and takes the segment off the list. Rendering again
sends one more take with a new seed (or a given one). Editing the text makes the segment new content: a new key, a new
version of the manifest (in storage, beside the audio), and an override that later ``enqueue`` runs of the same book
keep, so the fix is not undone by the corpus.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from worker.books.manifest import BookRecord, ManifestEntry, book_dir_key, book_segment_key, entry_line
from worker.constants import PRIORITY_BOOKS, TASK_SYNTHESIZE
from worker.contract import Job
from worker.runtime.takes import SegmentTakes, TakeRecords
from worker.storage import ObjectNotFound, Storage

STATES = ("passed", "rerendered", "needs_review", "accepted", "pending")


class ReviewError(ValueError):
    """The action cannot be done on this segment as it stands; the message says why."""


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def qa_counts(records: dict[str, SegmentTakes], entries: list[ManifestEntry]) -> dict[str, int]:
    """passed / rerendered / needs_review / accepted / pending / unchecked, over the manifest's segments."""
    counts = Counter(records[e.key].state if e.key in records else "unchecked" for e in entries)
    return {state: counts.get(state, 0) for state in (*STATES, "unchecked")}


def is_flagged(record: SegmentTakes) -> bool:
    manual_pending = record.state == "pending" and any(t.manual for t in record.attempts)
    return record.state == "needs_review" or manual_pending


@dataclass(frozen=True)
class Flagged:
    entry: ManifestEntry
    record: SegmentTakes

    def as_dict(self) -> dict[str, Any]:
        kept = self.record.kept
        return {
            "id": self.entry.id, "chapter": self.entry.chapter, "index": self.entry.index, "key": self.entry.key,
            "text": self.entry.normalized, "raw": self.entry.text, "state": self.record.state,
            "best": self.record.best,
            "transcript": kept.verdict.transcript if kept else None,
            "cer": kept.verdict.cer if kept else None, "score": kept.verdict.score if kept else None,
            "reasons": [r.model_dump() for r in kept.verdict.reasons] if kept else [],
            "attempts": [{"attempt": t.attempt, "seed": t.seed, "key": t.key, "passed": t.verdict.passed,
                          "score": t.verdict.score, "cer": t.verdict.cer, "transcript": t.verdict.transcript,
                          "reasons": [r.model_dump() for r in t.verdict.reasons], "manual": t.manual}
                         for t in self.record.attempts],
        }


def flagged(records: dict[str, SegmentTakes], entries: list[ManifestEntry]) -> list[Flagged]:
    return [Flagged(e, records[e.key]) for e in entries if e.key in records and is_flagged(records[e.key])]


def _record_of(takes: TakeRecords, book: str, entry: ManifestEntry) -> SegmentTakes:
    record = takes.get(book, entry.key)
    if record is None or record.job is None:
        raise ReviewError(f"{entry.id} has no quality record yet (its first take is not judged): nothing to act on")
    return record


def accept(takes: TakeRecords, book: str, entry: ManifestEntry) -> SegmentTakes:
    """Keep the segment's current take: it leaves the review list."""
    _record_of(takes, book, entry)

    def accepted(current: SegmentTakes | None) -> SegmentTakes | None:
        if current is None:
            return None
        current.state = "accepted"
        return current

    record = takes.update(book, entry.key, accepted)
    assert record is not None
    return record


def _send(app: Any, queue: str, job: Job) -> str:
    task_id = f"{job.resolved_job_id()}.{uuid.uuid4().hex[:12]}"
    app.send_task(TASK_SYNTHESIZE, kwargs={"job": job.model_dump(mode="json", exclude_none=True)}, task_id=task_id,
                  queue=queue, priority=PRIORITY_BOOKS)
    return task_id


def rerender(app: Any, queue: str, takes: TakeRecords, book: str, entry: ManifestEntry,
             seed: int | None = None) -> Job:
    """One more take of the segment, by hand, with a new seed (or ``seed``); judged like any take."""
    record = _record_of(takes, book, entry)
    first = Job.model_validate(record.job)
    assert first.qa is not None
    reserved: list[int] = []

    def reserve(current: SegmentTakes | None) -> SegmentTakes | None:  # two at once never get one attempt number
        if current is None:
            return None
        current.reserved = max([current.reserved, *(t.attempt for t in current.attempts)]) + 1
        reserved.append(current.reserved)
        return current

    takes.update(book, entry.key, reserve)
    attempt = reserved[-1]
    job = first.model_copy(update={"qa": first.qa.model_copy(update={"attempt": attempt, "seed": seed,
                                                                      "manual": True})})
    _send(app, queue, job)
    return job


def edit_text(app: Any, queue: str, storage: Storage, takes: TakeRecords, record: BookRecord,
              entries: list[ManifestEntry], entry: ManifestEntry, text: str) -> tuple[BookRecord, ManifestEntry]:
    """The segment spoken as ``text``: new content (a new key), a new version of the manifest in storage, and an
    override later enqueues of the book keep. Its first take is sent at once."""
    text = " ".join(text.split())
    if not text:
        raise ReviewError("the new text is empty")
    current = takes.get(record.book, entry.key)
    template = Job.model_validate(current.job) if current is not None and current.job else None
    if template is None:
        raise ReviewError(f"{entry.id} has no job on record to render again from")
    job = template.model_copy(update={"text": text, "output": template.output.model_copy(update={"key": None})})
    job = Job.model_validate(job.model_dump(mode="json", exclude_none=True))  # revalidated: the text is checked
    key = book_segment_key(record.prefix, record.book, entry.chapter, job)
    job = job.model_copy(update={"output": job.output.model_copy(update={"key": key})})
    task_id = _send(app, queue, job)
    original = (entry.model_extra or {}).get("original") or entry.normalized  # the corpus's text, before any edit
    updated = entry.model_copy(update={"normalized": text, "key": key, "task_id": task_id, "task": TASK_SYNTHESIZE,
                                       "original": original})
    new_entries = [updated if e.id == entry.id else e for e in entries]
    overrides = dict(record.extra.get("overrides") or {})
    overrides[text_digest(original)] = text
    new_record = record.model_copy(update={"version": record.version + 1,
                                           "extra": {**record.extra, "overrides": overrides}})
    folder = book_dir_key(record.prefix, record.book)
    storage.put(f"{folder}/manifest.jsonl", "".join(entry_line(e) for e in new_entries).encode("utf-8"),
                content_type="application/x-ndjson")
    storage.put(f"{folder}/book.json", new_record.model_dump_json(indent=2).encode(), content_type="application/json")
    return new_record, updated


def book_from_storage(storage: Storage, prefix: str, book: str) -> tuple[BookRecord, list[ManifestEntry]]:
    from worker.books.status import manifest_from_storage

    try:
        record = BookRecord.model_validate_json(storage.get(f"{book_dir_key(prefix, book)}/book.json"))
    except ObjectNotFound:
        raise FileNotFoundError(f"no book {book!r} under {prefix!r} in {storage.url}") from None
    return record, manifest_from_storage(storage, prefix, book)
