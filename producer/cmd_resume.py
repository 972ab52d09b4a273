"""``f5-batch resume``, and following a book with ``--wait``.

``resume`` continues an interrupted enqueue from the book's record (same corpus, cast, lexicon and ``--max-queued``),
or, for a book whose enqueue completed, sends again each segment whose audio is not stored and that no message in the
broker carries any more. Either way each missing segment is sent once, under a fresh task id: a FAILURE or a revocation
of its earlier run cannot answer for the new one. Safe to run any number of times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from producer.book_run import BookSource, read_lexicon, run_book, upload_manifest
from producer.cast import BookCast
from producer.cmd_common import _context, progress_option, resend_option, with_common
from producer.jobs import BookJobs, fresh_task_id
from producer.manifest import ManifestFiles, write_atomic
from producer.progress import console
from producer.publish import BrokerUnavailable, Publisher, check_broker, queue_empty
from producer.tracking import LostMessages, follow, load_entries, load_record
from worker.books.manifest import BookRecord, ManifestEntry, entry_line
from worker.books.status import stored_keys
from worker.broker.inventory import broker_inventory
from worker.constants import TASK_SYNTHESIZE
from worker.storage import Storage

DEFAULT_MAX_QUEUED = 2000


def book_cast(record: BookRecord, storage: Storage) -> BookCast | None:
    return BookCast.from_record(record.cast, storage) if record.cast else None


def resend_missing(app: Any, queue: str, max_queued: int, record: BookRecord, files: ManifestFiles,
                   storage: Storage, entries: list[ManifestEntry], only: set[str] | None = None) -> int:
    """Send one ``f5tts.synthesize`` job for each segment that nothing can produce any more (``only``: among these
    ids), under a fresh task id, and point the manifest at it. Returns how many segments were sent."""
    # The broker first, then storage: a message that finishes between the two reads is stored by the second (read the
    # other way round, it was in neither, and was sent again)
    in_broker = broker_inventory(app, queue).keys
    present = in_broker | stored_keys(storage, record.prefix, record.book)
    jobs = BookJobs(record, book_cast(record, storage))
    sent: dict[str, str] = {}  # key -> task id (a key a book uses twice is sent once)
    with Publisher(app, queue, max_queued, record.priority) as publisher:
        for entry in entries:
            if entry.key in present or entry.key in sent or (only is not None and entry.id not in only):
                continue
            job = jobs.entry_job(entry)
            task_id = fresh_task_id(job.resolved_job_id())
            publisher.publish(TASK_SYNTHESIZE, {"job": job.model_dump(mode="json", exclude_none=True)}, task_id)
            sent[entry.key] = task_id
    if sent:
        rewritten = [entry.model_copy(update={"task_id": sent[entry.key], "task": TASK_SYNTHESIZE})
                     if entry.key in sent else entry for entry in entries]
        write_atomic(files.final, "".join(entry_line(e) for e in rewritten).encode("utf-8"))
        files.partial.unlink(missing_ok=True)
        upload_manifest(storage, files, record.prefix, record.book)
    return sum(1 for entry in entries if entry.key in sent)


def continue_enqueue(settings: Any, app: Any, storage: Storage, record: BookRecord, files: ManifestFiles,
                     max_queued: int, interval_s: float) -> None:
    """An interrupted enqueue: the rest of the book from its corpus, read as the first run read it."""
    corpus_path = Path(record.corpus)
    if not corpus_path.is_file():
        raise click.ClickException(f"the enqueue of {record.book} was interrupted, and its corpus {corpus_path} is "
                                   "not here to continue from; run `f5-batch enqueue` with the corpus again")
    lexicon = read_lexicon(record.lexicon, record.lexicon_sha256 or None)
    console.print(f"{record.book}: the enqueue was interrupted; continuing it from {corpus_path}")
    run_book(settings, app, storage, record, files, BookSource(corpus_path, book_cast(record, storage), lexicon),
             max_queued, interval_s)


def follow_book(app: Any, settings: Any, storage: Storage, files: ManifestFiles, record: BookRecord,
                interval_s: float, max_queued: int, resend_after_s: float) -> None:
    from worker.runtime.deadletter import DeadLetters

    entries, queue = files.read_entries(), settings.broker.queue

    def not_in_broker(ids: set[str]) -> set[str]:
        keys = broker_inventory(app, queue).keys
        return {e.id for e in files.read_entries() if e.id in ids and e.key not in keys}

    lost = LostMessages(queue_empty=lambda: queue_empty(app, queue), never_started=not_in_broker,
                        after_s=resend_after_s, resend=lambda ids: resend_missing(
                            app, queue, max_queued, record, files, storage, files.read_entries(), only=ids))
    book = record.book
    status = follow(app, storage, DeadLetters.for_results(settings.broker), entries, record.prefix, book,
                    interval_s=interval_s, lost=lost)
    if status.failed:
        for job_id, reason in sorted(status.failed.items())[:20]:
            console.print(f"[red]failed[/] {job_id}: {reason['code']}: {reason['message']}")
        raise click.ClickException(f"{len(status.failed)} of {status.total} segments failed")
    console.print(f"{book}: all {status.total} segments rendered")


@click.command("resume")
@click.argument("book")
@click.option("--max-queued", type=click.IntRange(min=1),
              help=f"Backpressure (default: what the enqueue used, else {DEFAULT_MAX_QUEUED}).")
@click.option("--wait", is_flag=True)
@with_common
@progress_option
@resend_option
def resume(book: str, max_queued: int | None, wait: bool, prefix: str, manifest_dir: Path, interval_s: float,
           resend_after: float) -> None:
    """Finish an interrupted enqueue of BOOK, or send again every segment whose audio is not in storage and that no
    message in the broker carries. Each missing segment is sent once; safe to run any number of times."""
    settings, app, storage = _context()
    files = ManifestFiles(manifest_dir, book)
    try:
        check_broker(app)
    except BrokerUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    record = load_record(files, storage, prefix, book)
    if record is None:
        raise click.ClickException(f"no record of book {book!r} in {manifest_dir} or in {storage.url}")
    max_queued = max_queued or record.max_queued or DEFAULT_MAX_QUEUED
    if not record.complete:
        continue_enqueue(settings, app, storage, record, files, max_queued, interval_s)
        record = load_record(files, storage, prefix, book) or record
    try:
        entries = load_entries(files, storage, prefix, book)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    missing = resend_missing(app, settings.broker.queue, max_queued, record, files, storage, entries)
    console.print(f"{book}: {len(entries) - missing} of {len(entries)} segments stored or on their way; "
                  f"{missing} re-enqueued")
    if wait:
        follow_book(app, settings, storage, files, record, interval_s, max_queued, resend_after)
