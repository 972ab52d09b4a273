"""Following a book from the command line: its manifest, and ``--wait`` until every segment is rendered or failed."""

from __future__ import annotations

import logging
import time

from celery import Celery
from redis.exceptions import RedisError

from producer.manifest import ManifestFiles
from producer.progress import DEFAULT_INTERVAL_S, Reporter
from worker.books.manifest import BookRecord, ManifestEntry, book_dir_key
from worker.books.status import BookStatus, book_status, manifest_from_storage, stored_keys
from worker.errors import TransientError
from worker.runtime.deadletter import DeadLetters
from worker.storage import ObjectNotFound, Storage

log = logging.getLogger(__name__)

__all__ = ["follow", "load_entries", "load_record", "stored_keys"]


def load_entries(files: ManifestFiles, storage: Storage, prefix: str, book: str) -> list[ManifestEntry]:
    """The manifest from the local folder, or from storage when this machine did not enqueue the book."""
    entries = files.read_entries()
    if entries:
        return entries
    try:
        return manifest_from_storage(storage, prefix, book)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"no manifest for book {book!r} in {files.folder}; {exc}") from None


def load_record(files: ManifestFiles, storage: Storage, prefix: str, book: str) -> BookRecord | None:
    """The book record from the local folder, or from storage when this machine did not enqueue the book."""
    record = files.read_record()
    if record is not None:
        return record
    try:
        return BookRecord.model_validate_json(storage.get(f"{book_dir_key(prefix, book)}/book.json"))
    except ObjectNotFound:
        return None


def follow(app: Celery, storage: Storage, dead_letters: DeadLetters, entries: list[ManifestEntry], prefix: str,
           book: str, poll_s: float = 2.0, interval_s: float = DEFAULT_INTERVAL_S) -> BookStatus:
    """Wait until every segment is stored or failed for good, showing progress (a bar, or plain lines)."""
    started, first_done = time.monotonic(), None
    with Reporter(f"rendering {book}", len(entries), "segments", interval_s) as reporter:
        while True:
            try:
                status = book_status(app, storage, dead_letters, entries, prefix, book, with_states=False)
            except (ConnectionError, OSError, RedisError, TransientError) as exc:  # Redis restarting, storage blip
                log.warning("cannot read progress right now (%s); trying again", exc)
                reporter.notice("unreadable", f"cannot read the progress of {book} right now ({exc}); retrying")
                time.sleep(poll_s)
                continue
            first_done = status.done if first_done is None else first_done
            elapsed = time.monotonic() - started
            rate = (status.done - first_done) / elapsed if elapsed > 0 else 0.0
            reporter.update(done=status.done + len(status.failed), rate=f"{rate:.1f}/s")
            if status.finished:
                return status
            time.sleep(poll_s)
