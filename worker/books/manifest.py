"""The book manifest's records: one JSONL line per segment, and the book record with its voice and parameters.

Torch-free and shared: the producer writes them, the assembler task and ``f5-batch assemble`` read them to stitch
chapters, and ``status``, ``resume`` and the gateway read them to track a book. The local files a producer keeps while
enqueuing live in ``producer.manifest``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from worker.contract import JobParams, VoiceSpec


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    book: str
    chapter: int
    chapter_title: str = ""
    index: int
    text: str  # raw source text, exactly as in the corpus
    normalized: str  # what is spoken
    key: str
    task_id: str
    task: str  # the task name that carries this segment
    heading: bool = False
    paragraph_end: bool = True
    source_id: str | None = None

    @property
    def reading_position(self) -> tuple[int, int]:
        """Where the segment sits in the book: chapter, then index. Manifests are written in this order."""
        return self.chapter, self.index


class BookRecord(BaseModel):
    """What a book was enqueued with: enough for ``resume`` to continue it from any machine."""

    model_config = ConfigDict(extra="allow")

    book: str
    prefix: str
    voice: VoiceSpec
    params: JobParams
    lang: str
    max_chars: int
    batch_size: int = 1
    priority: int | None = None
    corpus: str = ""
    encoding: str = "utf-8"
    chapter_regex: str | None = None
    chapters: str | None = None  # the --chapters range, if any
    segments: int = 0
    complete: bool = False
    extra: dict[str, Any] = Field(default_factory=dict)


def book_dir_key(prefix: str, book: str) -> str:
    return f"{prefix}/{book}" if prefix else book


def read_entries(lines: Iterable[str]) -> Iterator[ManifestEntry]:
    for line in lines:
        if line.strip():
            yield ManifestEntry.model_validate(json.loads(line))


def entry_line(entry: ManifestEntry) -> str:
    return json.dumps(entry.model_dump(exclude_none=False), ensure_ascii=False, separators=(",", ":")) + "\n"
