"""The manifest files a producer keeps for a book while it enqueues it.

Written locally (``<book>.jsonl.partial``, appended and flushed as messages are confirmed, so a crashed or interrupted
enqueue can continue where it stopped), renamed when complete, and uploaded beside the audio so that ``status``,
``resume`` and ``assemble`` work from any machine. The record types themselves are shared: ``worker.books.manifest``.
"""

from __future__ import annotations

import os
from pathlib import Path

from worker.books.manifest import BookRecord, ManifestEntry, read_entries


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


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)
