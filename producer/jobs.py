"""Turning a corpus into jobs: segments → contract jobs (single or batched) → published → manifest.

A segment's output key is derived from what determines its audio (its spoken text, its voice's clip by digest and
transcript, the parameters, the seed) inside its chapter's folder: ``books/BOOK/001/<digest>.wav``. So an edit to the
text, the lexicon, the voice map or a clip changes exactly the keys of the segments it changes; every other segment
keeps its key, finds its audio stored, and is not rendered again, wherever the edit moved it in the chapter.

Job ids (``BOOK-001-00005``) say where a segment sits, for people and for dataset exports. Task ids are fresh for
every message sent: a segment sent again after a failure or a revocation is a new run, never answered by an old
state. Sending twice is prevented by looking, not by ids: a segment whose audio is stored, or that a message in the
broker still carries, is not sent (see ``producer.enqueue``).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from producer.cast import BookCast
from producer.corpus import Segment
from worker.books.manifest import BookRecord, ManifestEntry, book_segment_key
from worker.books.review import text_digest
from worker.constants import TASK_SYNTHESIZE, TASK_SYNTHESIZE_BATCH
from worker.contract import Job, JobParams, QASpec, VoiceSpec
from worker.planner import PlanItem, PlannerConfig, plan_batches
from worker.speech import estimated_frames

BOOK_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
BATCH_WINDOW = 8  # segments planned together = batch size × this


@dataclass(frozen=True)
class Message:
    """One task to publish and the manifest lines it covers."""

    task: str
    task_id: str
    kwargs: dict[str, Any]
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

    def only(self, keys: set[str]) -> Message | None:
        """This message carrying only the jobs whose output keys are in ``keys`` (None when none is left); its entries
        stay whole, since the manifest lists every segment."""
        if self.task == TASK_SYNTHESIZE:
            return self if self.kwargs["job"]["output"]["key"] in keys else None
        jobs = [job for job in self.kwargs["jobs"] if job["output"]["key"] in keys]
        if not jobs:
            return None
        return replace(self, kwargs={"jobs": jobs}) if len(jobs) < len(self.kwargs["jobs"]) else self


def fresh_task_id(base: str) -> str:
    return f"{base}.{uuid.uuid4().hex[:12]}"


class BookJobs:
    """How a book's segments become jobs: its record (parameters, prefix, flags) and its cast (voices)."""

    def __init__(self, record: BookRecord, cast: BookCast | None) -> None:
        self.record = record
        self.cast = cast

    def voice(self, name: str) -> tuple[VoiceSpec, JobParams]:
        if self.cast is None or not name:
            return self.record.voice, self.record.params
        return self.cast.voice(name).spec, self.cast.params(name, self.record.params)

    def planning_seconds(self, name: str, fallback: float) -> float:
        return self.cast.voice(name).seconds if self.cast is not None and name else fallback

    def _metadata(self, chapter: int, index: int) -> dict[str, Any]:
        extra = self.record.extra
        return {"book": self.record.book, "chapter": chapter, "index": index,
                **({"assemble": True} if extra.get("assemble") else {})}

    def job(self, job_id: str, text: str, voice_name: str, chapter: int, index: int, key: str | None = None) -> Job:
        """The one place a book's job is built, for enqueue and resume alike (same content, same key)."""
        voice, params = self.voice(voice_name)
        qa = self.record.extra.get("qa")
        job = Job(job_id=job_id, text=text, voice=voice, params=params, metadata=self._metadata(chapter, index),
                  qa=QASpec.model_validate(qa) if qa else None)
        key = key or self.segment_key(chapter, job)
        return job.model_copy(update={"output": job.output.model_copy(update={"key": key})})

    def segment_key(self, chapter: int, job: Job) -> str:
        return book_segment_key(self.record.prefix, self.record.book, chapter, job)

    def spoken(self, segment: Segment) -> str:
        """The segment's text, or the fix a person made to it on the review page (kept across enqueues)."""
        overrides: dict[str, str] = self.record.extra.get("overrides") or {}
        return overrides.get(text_digest(segment.text), segment.text)

    def segment_job(self, segment: Segment) -> Job:
        return self.job(f"{self.record.book}-{segment.chapter:03d}-{segment.index:05d}", self.spoken(segment),
                        segment.voice, segment.chapter, segment.index)

    def entry_job(self, entry: ManifestEntry) -> Job:
        """A manifest line's job again, as ``segment_job`` made it: for ``resume``."""
        return self.job(entry.id, entry.normalized, entry.voice, entry.chapter, entry.index, entry.key)

    def entry(self, segment: Segment, job: Job, task: str, task_id: str) -> ManifestEntry:
        edited = {"original": segment.text} if job.text != segment.text else {}
        return ManifestEntry(id=job.resolved_job_id(), book=self.record.book, chapter=segment.chapter,
                             chapter_title=segment.chapter_title, index=segment.index, text=segment.raw,
                             normalized=job.text, key=job.resolved_key(), task_id=task_id, task=task,
                             heading=segment.heading, paragraph_end=segment.paragraph_end,
                             source_id=segment.source_id, voice=segment.voice, pause_after_s=segment.pause_after_s,
                             **edited)

    def single_messages(self, stream: Iterator[Segment]) -> Iterator[Message]:
        for ordinal, segment in enumerate(stream):
            job = self.segment_job(segment)
            task_id = fresh_task_id(job.resolved_job_id())
            yield Message(TASK_SYNTHESIZE, task_id, {"job": job.model_dump(mode="json", exclude_none=True)},
                          [self.entry(segment, job, TASK_SYNTHESIZE, task_id)], (ordinal,))

    def batch_messages(self, stream: Iterator[Segment], ref_seconds: float) -> Iterator[Message]:
        """Segments of similar length grouped into ``synthesize_batch`` jobs by the worker's own planner (segments
        of different voices share messages, as they share the engine's passes)."""
        size = self.record.batch_size
        config = PlannerConfig(frame_budget=size * 4096, max_batch=size)
        offset = 0
        while window := list(itertools.islice(stream, size * BATCH_WINDOW)):
            jobs = [self.segment_job(s) for s in window]
            items = [PlanItem(id=i, frames=estimated_frames(self.planning_seconds(s.voice, ref_seconds),
                                                            j.voice.ref_text, s.text, j.params.speed))
                     for i, (s, j) in enumerate(zip(window, jobs, strict=True))]
            for plan in sorted(plan_batches(items, config), key=lambda p: min(item.id for item in p.items)):
                positions = sorted(item.id for item in plan.items)
                first = window[positions[0]]
                task_id = fresh_task_id(f"{self.record.book}-{first.chapter:03d}-{first.index:05d}-batch")
                members = [(window[p], jobs[p]) for p in positions]
                kwargs = {"jobs": [j.model_dump(mode="json", exclude_none=True) for _, j in members]}
                entries = [self.entry(s, j, TASK_SYNTHESIZE_BATCH, task_id) for s, j in members]
                yield Message(TASK_SYNTHESIZE_BATCH, task_id, kwargs, entries, tuple(offset + p for p in positions))
            offset += len(window)


def book_record(book: str, prefix: str, voice: VoiceSpec, params: JobParams, lang: str, max_chars: int,
                batch_size: int, priority: int | None, corpus: Path) -> BookRecord:
    return BookRecord(book=book, prefix=prefix, voice=voice, params=params, lang=lang, max_chars=max_chars,
                      batch_size=batch_size, priority=priority, corpus=str(corpus))
