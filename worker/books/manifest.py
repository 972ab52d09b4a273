"""The book manifest's records: one JSONL line per segment, and the book record with its voice and parameters.

Torch-free and shared: the producer writes them, the assembler task and ``f5-batch assemble`` read them to stitch
chapters, and ``status``, ``resume`` and the gateway read them to track a book. The local files a producer keeps while
enqueuing live in ``producer.manifest``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from worker.books.meta import BookMeta
from worker.contract import Job, JobParams, VoiceSpec

log = logging.getLogger(__name__)


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
    voice: str = ""  # the cast's name of the voice that speaks it ("" for a book in one unnamed voice)
    pause_after_s: float | None = None  # asked-for silence after it ([pause], a scene break): assembly uses it

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
    # A book as a script (voices, lexicon, pauses), and what its segments were made from: an edit to any of these is
    # a new version, whose changed segments alone are rendered.
    cast: dict[str, Any] | None = None  # producer.cast.BookCast.to_record(); None: one voice, ``voice``
    lexicon: str | None = None  # the lexicon file, for a resume that continues from the corpus
    lexicon_sha256: str = ""
    voices_file: str | None = None  # the voice map (upstream's TOML), likewise
    corpus_sha256: str = ""
    scene_pause_s: float = 2.0
    version: int = 1
    max_queued: int | None = None  # --max-queued of the enqueue, which resume keeps
    meta: BookMeta = Field(default_factory=BookMeta)  # title, authors, cover… for the audiobook files


KEY_DIGEST_CHARS = 20


def book_dir_key(prefix: str, book: str) -> str:
    return f"{prefix}/{book}" if prefix else book


def book_segment_key(prefix: str, book: str, chapter: int, job: Job) -> str:
    """A segment's output key: its chapter's folder, and a digest of what determines its audio (the job's content:
    text, voice by digest, parameters, seed). An edit changes exactly the keys of the segments it changes."""
    return f"{book_dir_key(prefix, book)}/{chapter:03d}/{job.content_hash()[:KEY_DIGEST_CHARS]}.wav"


def read_entries(lines: Iterable[str]) -> Iterator[ManifestEntry]:
    """Manifest lines as entries. A last line cut short (power lost while a partial manifest was being appended to)
    is skipped with a warning: it names a segment that the next run writes again."""
    pending: str | None = None
    for line in lines:
        if not line.strip():
            continue
        if pending is not None:
            yield _entry(pending)
        pending = line
    if pending is not None:
        try:
            yield _entry(pending)
        except ValueError:
            log.warning("the manifest's last line is cut short (%d characters); it is ignored", len(pending))


def _entry(line: str) -> ManifestEntry:
    return ManifestEntry.model_validate(json.loads(line))


def entry_line(entry: ManifestEntry) -> str:
    return json.dumps(entry.model_dump(exclude_none=False), ensure_ascii=False, separators=(",", ":")) + "\n"
