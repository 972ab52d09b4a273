"""Following a book from the command line: its manifest, and ``--wait`` until every segment is rendered or failed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

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


def stored_record(storage: Storage, prefix: str, book: str) -> BookRecord | None:
    try:
        return BookRecord.model_validate_json(storage.get(f"{book_dir_key(prefix, book)}/book.json"))
    except ObjectNotFound:
        return None


def _storage_is_newer(files: ManifestFiles, storage: Storage, prefix: str, book: str) -> bool:
    """A version made elsewhere (a text fixed on the review page) is newer than this machine's copy."""
    local, stored = files.read_record(), stored_record(storage, prefix, book)
    return local is not None and stored is not None and stored.complete and stored.version > local.version


def load_entries(files: ManifestFiles, storage: Storage, prefix: str, book: str) -> list[ManifestEntry]:
    """The manifest from the local folder, or from storage when this machine did not enqueue the book (or storage
    holds a newer version of it)."""
    entries = files.read_entries()
    if entries and not _storage_is_newer(files, storage, prefix, book):
        return entries
    try:
        return manifest_from_storage(storage, prefix, book)
    except FileNotFoundError as exc:
        if entries:
            return entries
        raise FileNotFoundError(f"no manifest for book {book!r} in {files.folder}; {exc}") from None


def load_record(files: ManifestFiles, storage: Storage, prefix: str, book: str) -> BookRecord | None:
    """The book record from the local folder, or from storage when this machine did not enqueue the book (or storage
    holds a newer version of it)."""
    record = files.read_record()
    stored = stored_record(storage, prefix, book)
    if record is None or (stored is not None and stored.complete and stored.version > record.version):
        return stored
    return record


class LostMessages:
    """Notices segments whose message is gone, and sends them again.

    Redis replicates asynchronously: when a Sentinel promotes a replica, the messages of the last moments before the
    failover may exist on no server any more. Their segments would wait forever. When nothing has been stored for
    ``after_s`` and the queue is empty, the missing segments whose tasks never started (no state in the result backend)
    have no message left: ``resend`` sends them again. (A segment that is running, retrying or failed is left alone;
    a job sent twice anyway is skipped, never stored twice.)
    """

    def __init__(self, queue_empty: Callable[[], bool], never_started: Callable[[set[str]], set[str]],
                 resend: Callable[[set[str]], int], after_s: float, clock: Callable[[], float] = time.monotonic):
        self.queue_empty, self.never_started, self.resend = queue_empty, never_started, resend
        self.after_s, self.clock = after_s, clock
        self._progress = (-1, clock())

    def check(self, status: BookStatus, missing: set[str]) -> int:
        now = self.clock()
        if status.done + len(status.failed) != self._progress[0]:
            self._progress = (status.done + len(status.failed), now)
            return 0
        if now - self._progress[1] < self.after_s or not missing or not self.queue_empty():
            return 0
        self._progress = (self._progress[0], now)
        lost = self.never_started(missing)
        return self.resend(lost) if lost else 0


def follow(app: Celery, storage: Storage, dead_letters: DeadLetters, entries: list[ManifestEntry], prefix: str,
           book: str, poll_s: float = 2.0, interval_s: float = DEFAULT_INTERVAL_S,
           lost: LostMessages | None = None) -> BookStatus:
    """Wait until every segment is stored or failed for good, showing progress (a bar, or plain lines), and with
    ``lost``, send again the segments whose messages a broker failover lost."""
    started, first_done = time.monotonic(), None
    with Reporter(f"rendering {book}", len(entries), "segments", interval_s) as reporter:
        while True:
            try:
                status = book_status(app, storage, dead_letters, entries, prefix, book, with_states=False)
                resent = lost.check(status, status.waiting) if lost is not None else 0
            except (ConnectionError, OSError, RedisError, TransientError) as exc:  # Redis restarting, storage blip
                log.warning("cannot read progress right now (%s); trying again", exc)
                reporter.notice("unreadable", f"cannot read the progress of {book} right now ({exc}); retrying")
                time.sleep(poll_s)
                continue
            if resent:
                reporter.notice("resent", f"{book}: {resent} segment(s) had no message left in the broker (a "
                                "failover?); sent again")
            first_done = status.done if first_done is None else first_done
            elapsed = time.monotonic() - started
            rate = (status.done - first_done) / elapsed if elapsed > 0 else 0.0
            reporter.update(done=status.done + len(status.failed), rate=f"{rate:.1f}/s")
            if status.finished:
                return status
            time.sleep(poll_s)
