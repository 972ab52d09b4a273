"""The book manifest: one JSONL line per segment, plus a small book record with the voice and parameters.

Written locally while enqueuing (``<book>.jsonl.partial``, appended and flushed line by line, so a crashed enqueue
can resume where it stopped), renamed when complete, and uploaded beside the audio so that ``status``, ``resume`` and
``assemble`` work from any machine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
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


class BookRecord(BaseModel):
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
    segments: int = 0
    complete: bool = False
    extra: dict[str, Any] = Field(default_factory=dict)


def book_dir_key(prefix: str, book: str) -> str:
    return f"{prefix}/{book}" if prefix else book


class ManifestFiles:
    """Local manifest paths for one book."""

    def __init__(self, folder: Path, book: str) -> None:
        self.folder = folder
        self.final = folder / f"{book}.jsonl"
        self.partial = folder / f"{book}.jsonl.partial"
        self.record = folder / f"{book}.book.json"

    def read_entries(self) -> list[ManifestEntry]:
        path = self.final if self.final.exists() else self.partial
        return list(read_entries(path.read_text(encoding="utf-8").splitlines())) if path.exists() else []

    def write_record(self, record: BookRecord) -> None:
        write_atomic(self.record, record.model_dump_json(indent=2).encode())

    def read_record(self) -> BookRecord | None:
        return BookRecord.model_validate_json(self.record.read_text()) if self.record.exists() else None


def read_entries(lines: Iterable[str]) -> Iterator[ManifestEntry]:
    for line in lines:
        if line.strip():
            yield ManifestEntry.model_validate(json.loads(line))


def entry_line(entry: ManifestEntry) -> str:
    return json.dumps(entry.model_dump(exclude_none=False), ensure_ascii=False, separators=(",", ":")) + "\n"


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)
