"""The manifest files a producer keeps for a book while it enqueues it.

Written locally (``<book>.jsonl.partial``, appended and flushed as messages are confirmed, so a crashed or interrupted
enqueue can continue where it stopped), renamed when complete, and uploaded beside the audio so that ``status``,
``resume`` and ``assemble`` work from any machine. The record types themselves are shared: ``worker.books.manifest``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from worker.books.manifest import BookRecord, ManifestEntry, entry_line, read_entries


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


class ReadingOrderWriter:
    """Writes manifest lines in the book's reading order, whatever order their messages are confirmed in.

    Batched messages group segments by length, so they are published (and confirmed) out of reading order. Each line
    waits here until every line before it is written; the file is therefore always a reading-order prefix of the
    book, and a crash leaves at most the waiting lines unwritten (a re-run finds their messages in the broker, or their
    audio stored, and writes them without sending them again).
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.next_ordinal = 0
        self._waiting: dict[int, ManifestEntry] = {}

    def add(self, ordinal: int, entry: ManifestEntry) -> None:
        self._waiting[ordinal] = entry

    def flush(self) -> int:
        """Write every line that is next in reading order; return how many were written."""
        written = 0
        while self.next_ordinal in self._waiting:
            self.out.write(entry_line(self._waiting.pop(self.next_ordinal)))
            self.next_ordinal += 1
            written += 1
        if written:
            self.out.flush()
            os.fsync(self.out.fileno())  # what the manifest lists was published: it must survive a power loss
        return written

    @property
    def waiting(self) -> int:
        return len(self._waiting)
