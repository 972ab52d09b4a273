"""One run of a book through the producer: what it is read with, what is sent, and what changed since last time.

Shared by ``enqueue`` (a book read from its corpus) and ``resume`` (an interrupted enqueue continued from the record).
A run reads the corpus with the book's cast and lexicon, sends each segment that nothing can still produce (its audio
is not stored, and no message in the broker carries it), writes the manifest afresh in reading order, and compares it
with the previous version: ``N changed, M unchanged, K removed``. An edit is a new version; segments whose content did
not change keep their keys and their audio.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from producer import corpus
from producer.cast import BookCast
from producer.corpus import Segment
from producer.enqueue import EnqueueInterrupted, EnqueueResult, corpus_size, finish_manifest, publish_book
from producer.interrupts import interruptible
from producer.jobs import BookJobs
from producer.lexicon import Lexicon, LexiconError, load_lexicon
from producer.manifest import ManifestFiles
from producer.progress import console
from producer.publish import BrokerUnavailable
from producer.reading import CorpusError
from producer.script import ScriptError
from producer.tracking import load_entries, stored_record
from worker.books.manifest import BookRecord, ManifestEntry, book_dir_key
from worker.books.status import stored_keys
from worker.broker.inventory import broker_inventory
from worker.storage import Storage

log = logging.getLogger(__name__)

INTERRUPTED_EXIT = 130


@dataclass(frozen=True)
class Changes:
    """The new version of a book's manifest against the one before it, by segment key."""

    changed: int
    unchanged: int
    removed: int
    first_version: bool

    def line(self) -> str:
        if self.first_version:
            return ""
        return f"{self.changed} changed, {self.unchanged} unchanged, {self.removed} removed"


def compare(old: list[ManifestEntry], new: list[ManifestEntry]) -> Changes:
    old_keys, new_keys = {e.key for e in old}, {e.key for e in new}
    return Changes(sum(1 for e in new if e.key not in old_keys), sum(1 for e in new if e.key in old_keys),
                   len(old_keys - new_keys), not old)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class BookSource:
    """What a run reads a book with."""

    path: Path
    cast: BookCast | None
    lexicon: Lexicon | None

    def limit(self, record: BookRecord, max_chars: int | None) -> Any:
        if self.cast is None:
            return record.max_chars
        cast = self.cast
        return lambda voice: cast.limit(voice or cast.narrator, record.params, max_chars)

    def segments(self, record: BookRecord) -> Iterator[Segment]:
        from producer.cmd_common import only_chapters

        stream = corpus.segments(self.path, self.limit(record, record.extra.get("max_chars_option")), record.lang,
                                 record.encoding, record.chapter_regex,
                                 self.cast.script() if self.cast is not None else None, self.lexicon,
                                 record.scene_pause_s)
        return only_chapters(stream, record.chapters)


def read_lexicon(path: str | None, expected_sha256: str | None = None) -> Lexicon | None:
    """The book's lexicon; with ``expected_sha256`` (a resume), it must be the one the book was enqueued with."""
    if not path:
        return None
    try:
        lexicon = load_lexicon(Path(path))
    except LexiconError as exc:
        raise click.ClickException(str(exc)) from None
    if expected_sha256 is not None and lexicon.digest != expected_sha256:
        raise click.ClickException(f"the lexicon {path} changed since the book was enqueued; run `f5-batch "
                                   "enqueue` again to make a new version with it")
    return lexicon


def check_script(source: BookSource, record: BookRecord) -> None:
    """Read the whole book once before anything is sent, when its markup can fail late (an unknown voice tag in its
    last chapter must stop ``enqueue`` before its first message, not after half the book)."""
    if source.cast is None or not source.cast.tags:
        return
    try:
        for _ in source.segments(record):
            pass
    except ScriptError as exc:
        raise click.ClickException(str(exc)) from None


def previous_entries(files: ManifestFiles, storage: Storage, record: BookRecord) -> list[ManifestEntry]:
    """The last complete version's manifest (the newest of this machine's and storage's); empty for a new book."""
    if not files.final.exists():
        stored = stored_record(storage, record.prefix, record.book)
        if stored is None or not stored.complete:
            return []
    try:
        return load_entries(files, storage, record.prefix, record.book)
    except FileNotFoundError:
        return []


def upload_manifest(storage: Storage, files: ManifestFiles, prefix: str, book: str) -> None:
    folder = book_dir_key(prefix, book)
    storage.put(f"{folder}/manifest.jsonl", files.final.read_bytes(), content_type="application/x-ndjson")
    storage.put(f"{folder}/book.json", files.record.read_bytes(), content_type="application/json")


def run_book(settings: Any, app: Any, storage: Storage, record: BookRecord, files: ManifestFiles,
             source: BookSource, max_queued: int, interval_s: float, force: bool = False) -> EnqueueResult:
    """Send what is missing of the book, then complete, version and upload its manifest."""
    old = previous_entries(files, storage, record)
    closer = None
    if record.extra.get("assemble"):
        from producer.autoassemble import ChapterCloser
        from worker.runtime.chapters import ChapterTracker

        closer = ChapterCloser(ChapterTracker.for_results(settings.broker), app, record.book,
                               {"prefix": record.prefix, "format": record.extra["assemble"]})
    not_needed: set[str] = set()
    known_tasks = {entry.key: entry.task_id for entry in old}
    if not force:
        inventory = broker_inventory(app, settings.broker.queue)
        not_needed = stored_keys(storage, record.prefix, record.book) | inventory.keys
        known_tasks.update(inventory.tasks_by_key)
    if closer is not None:
        closer.stored = set(not_needed)
    files.write_record(record)
    jobs = BookJobs(record, source.cast)
    segments = source.segments(record)
    messages = jobs.batch_messages(segments, record.extra.get("narrator_seconds", 12.0)) \
        if record.batch_size > 1 else jobs.single_messages(segments)
    try:
        with interruptible():
            result = publish_book(messages, files, not_needed, queue=settings.broker.queue, max_queued=max_queued,
                                  priority=record.priority, title=f"enqueue {record.book}",
                                  total_bytes=corpus_size(source.path), interval_s=interval_s, closer=closer,
                                  known_tasks=known_tasks)
    except EnqueueInterrupted as stopped:
        console.print(f"{record.book}: interrupted after {stopped.segments} segments; the manifest "
                      f"{files.partial} lists them. `f5-batch resume {record.book}` continues.")
        raise SystemExit(INTERRUPTED_EXIT) from None
    except (BrokerUnavailable, CorpusError, ScriptError) as exc:
        raise click.ClickException(f"{exc} (`f5-batch resume {record.book}` continues from here)") from None
    finish_manifest(files)
    new = files.read_entries()
    changes = compare(old, new)
    previous_version = record.version
    if not changes.first_version and (changes.changed or changes.removed):
        record.version = previous_version + 1
    record.segments, record.complete = result.segments, True
    files.write_record(record)
    upload_manifest(storage, files, record.prefix, record.book)
    rate = result.segments / result.elapsed_s if result.elapsed_s else 0
    console.print(f"{record.book}: {result.segments} segments, {result.published} messages published, "
                  f"{result.skipped} not sent (stored, or already on their way), in {result.elapsed_s:.1f} s "
                  f"({rate:.0f} segments/s); manifest {files.final}")
    if changes.line():
        console.print(f"{record.book}: version {record.version}: {changes.line()}")
    return result
