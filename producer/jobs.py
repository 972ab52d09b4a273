"""Turning a corpus into jobs: segments → contract jobs (single or batched) → published → manifest.

Ids, keys and task ids are derived from the book, the position and the content, so running ``enqueue`` twice gives
the same manifest, and a re-run after a crash skips what the partial manifest says was already published.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from producer.corpus import Segment
from worker.books.manifest import BookRecord, ManifestEntry
from worker.constants import TASK_SYNTHESIZE, TASK_SYNTHESIZE_BATCH
from worker.contract import Job, JobParams, VoiceSpec
from worker.planner import PlanItem, PlannerConfig, plan_batches
from worker.speech import estimated_frames

BOOK_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
BATCH_WINDOW = 8  # segments planned together = batch size × this


@dataclass(frozen=True)
class Message:
    """One task to publish and the manifest lines it covers."""

    task: str
    task_id: str
    kwargs: dict
    entries: list[ManifestEntry]
    ordinals: tuple[int, ...]  # each entry's position in the book's reading order (0-based): the manifest's order

    @property
    def summary(self) -> str:
        """A short, readable description of the arguments, for Flower."""
        first = self.entries[0]
        text = first.normalized if len(first.normalized) <= 60 else first.normalized[:57] + "..."
        if len(self.entries) == 1:
            return f"{{'job': {first.id!r} -> {first.key!r}: {text!r}}}"
        return f"{{'jobs': {len(self.entries)} segments from {first.id!r}: {text!r}}}"


def segment_key(prefix: str, book: str, segment: Segment) -> str:
    return f"{prefix}/{book}/{segment.chapter:03d}/{segment.index:05d}.wav" if prefix else \
        f"{book}/{segment.chapter:03d}/{segment.index:05d}.wav"


def _book_job(record: BookRecord, job_id: str, text: str, key: str, chapter: int, index: int) -> Job:
    """The one place a book's job is built, for enqueue and resume alike (same hash, same task id)."""
    return Job(
        job_id=job_id,
        text=text,
        voice=record.voice,
        output={"key": key},
        params=record.params,
        metadata={"book": record.book, "chapter": chapter, "index": index,
                  **({"assemble": True} if record.extra.get("assemble") else {})},
    )


def segment_job(record: BookRecord, segment: Segment) -> Job:
    return _book_job(record, f"{record.book}-{segment.chapter:03d}-{segment.index:05d}", segment.text,
                     segment_key(record.prefix, record.book, segment), segment.chapter, segment.index)


def entry_job(record: BookRecord, entry: ManifestEntry) -> Job:
    """A manifest line's job again, as ``segment_job`` made it: for ``resume``."""
    return _book_job(record, entry.id, entry.normalized, entry.key, entry.chapter, entry.index)


def single_task_id(job: Job) -> str:
    return job.task_id()


def _entry(record: BookRecord, segment: Segment, job: Job, task: str, task_id: str) -> ManifestEntry:
    return ManifestEntry(id=job.resolved_job_id(), book=record.book, chapter=segment.chapter,
                         chapter_title=segment.chapter_title, index=segment.index, text=segment.raw,
                         normalized=segment.text, key=job.resolved_key(), task_id=task_id, task=task,
                         heading=segment.heading, paragraph_end=segment.paragraph_end, source_id=segment.source_id)


def single_messages(record: BookRecord, stream: Iterator[Segment]) -> Iterator[Message]:
    for ordinal, segment in enumerate(stream):
        job = segment_job(record, segment)
        task_id = single_task_id(job)
        yield Message(TASK_SYNTHESIZE, task_id, {"job": job.model_dump(mode="json", exclude_none=True)},
                      [_entry(record, segment, job, TASK_SYNTHESIZE, task_id)], (ordinal,))


def batch_messages(record: BookRecord, stream: Iterator[Segment], ref_seconds: float) -> Iterator[Message]:
    """Segments of similar length grouped into ``synthesize_batch`` jobs by the worker's own planner."""
    config = PlannerConfig(frame_budget=record.batch_size * 4096, max_batch=record.batch_size)
    offset = 0
    while window := list(itertools.islice(stream, record.batch_size * BATCH_WINDOW)):
        voice, speed = record.voice, record.params.speed
        items = [PlanItem(id=i, frames=estimated_frames(ref_seconds, voice.ref_text, s.text, speed))
                 for i, s in enumerate(window)]
        plans = plan_batches(items, config)
        for plan in sorted(plans, key=lambda p: min(item.id for item in p.items)):
            positions = sorted(item.id for item in plan.items)
            members = [window[position] for position in positions]
            jobs = [segment_job(record, s) for s in members]
            digest = hashlib.sha256("|".join(f"{j.resolved_job_id()}:{j.content_hash()}" for j in jobs).encode())
            first = members[0]
            task_id = f"{record.book}-{first.chapter:03d}-{first.index:05d}-batch.{digest.hexdigest()[:12]}"
            kwargs = {"jobs": [j.model_dump(mode="json", exclude_none=True) for j in jobs]}
            entries = [_entry(record, s, j, TASK_SYNTHESIZE_BATCH, task_id) for s, j in zip(members, jobs,
                                                                                               strict=True)]
            yield Message(TASK_SYNTHESIZE_BATCH, task_id, kwargs, entries, tuple(offset + p for p in positions))
        offset += len(window)


def book_record(book: str, prefix: str, voice: VoiceSpec, params: JobParams, lang: str, max_chars: int,
                batch_size: int, priority: int | None, corpus: Path) -> BookRecord:
    return BookRecord(book=book, prefix=prefix, voice=voice, params=params, lang=lang, max_chars=max_chars,
                      batch_size=batch_size, priority=priority, corpus=str(corpus))
