"""``f5-batch review``, ``check``, ``accept`` and ``rerender``: the quality gate from the command line.

``review`` lists the segments no take of which passed (text, what the recogniser heard, score, reasons); ``check``
judges a book rendered before its gate was on (or takes whose check was lost); ``accept`` and ``rerender`` do what the
review page's buttons do: keep the current take, another take with a new seed, or the segment spoken with a fixed
text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table

from producer.cmd_common import _context, with_common
from producer.manifest import ManifestFiles
from producer.progress import console
from producer.tracking import load_entries, load_record
from worker.books.review import ReviewError, accept, edit_text, flagged, qa_counts, rerender
from worker.books.status import stored_keys
from worker.contract import Job, QASpec
from worker.runtime.takes import TakeRecords

if TYPE_CHECKING:
    from celery import Celery

    from worker.books.manifest import BookRecord, ManifestEntry
    from worker.settings import Settings
    from worker.storage import Storage


def _book(book: str, prefix: str, manifest_dir: Path) -> tuple[Settings, Celery, Storage, ManifestFiles, BookRecord,
                                                                list[ManifestEntry], TakeRecords]:
    settings, app, storage = _context()
    files = ManifestFiles(manifest_dir, book)
    try:
        entries = load_entries(files, storage, prefix, book)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    record = load_record(files, storage, prefix, book)
    if record is None:
        raise click.ClickException(f"no record of book {book!r}")
    return settings, app, storage, files, record, entries, TakeRecords.for_results(settings.broker)


@click.command("review")
@click.argument("book")
@click.option("--json", "as_json", is_flag=True, help="Print the flagged segments as JSON.")
@with_common
def review(book: str, as_json: bool, prefix: str, manifest_dir: Path) -> None:
    """The segments of BOOK no take of which passed: text, transcript, score and reasons."""
    _, _, _, _, _, entries, takes = _book(book, prefix, manifest_dir)
    records = takes.by_key(book, [e.key for e in entries])
    items = [item.as_dict() for item in flagged(records, entries)]
    if as_json:
        click.echo(json.dumps({"book": book, "counts": qa_counts(records, entries), "flagged": items},
                              ensure_ascii=False, indent=2))
        return
    table = Table("id", "state", "score", "CER", "text", "heard", "reasons", title=f"{book}: {len(items)} to review")
    for item in items:
        reasons = "; ".join(r["code"] for r in item["reasons"])
        table.add_row(item["id"], item["state"], f"{item['score']:.2f}" if item["score"] is not None else "",
                      f"{item['cer']:.2f}" if item["cer"] is not None else "", item["text"][:60],
                      (item["transcript"] or "")[:60], reasons)
    console.print(table)


@click.command("check")
@click.argument("book")
@click.option("--asr/--signal", default=True, show_default=True,
              help="Transcribe on the QA queue (needs a QA worker), or signal checks only.")
@click.option("--attempts", type=click.IntRange(1, 16), default=3, show_default=True)
@click.option("--max-cer", type=click.FloatRange(0, 1))
@click.option("--all", "everything", is_flag=True, help="Judge every stored segment, judged before or not.")
@with_common
def check(book: str, asr: bool, attempts: int, max_cer: float | None, everything: bool, prefix: str,
          manifest_dir: Path) -> None:
    """Judge BOOK's stored segments that have no verdict yet (a book rendered before its gate was on): one check per
    segment on the QA queue; failing ones are rendered again, as if the gate had been on."""
    from worker.qa_tasks import send_checks

    settings, _, storage, _, record, entries, takes = _book(book, prefix, manifest_dir)
    present = stored_keys(storage, prefix, book)
    records = takes.by_key(book, [e.key for e in entries])
    spec = QASpec(max_attempts=attempts, asr=asr, lang=record.lang, max_cer=max_cer)
    from producer.cmd_resume import book_cast
    from producer.jobs import BookJobs

    jobs = BookJobs(record.model_copy(update={"extra": {**record.extra, "qa": spec.model_dump(exclude_none=True)}}),
                    book_cast(record, storage))
    todo: list[tuple[Job, str]] = []
    for entry in entries:
        if entry.key in present and (everything or entry.key not in records):
            todo.append((jobs.entry_job(entry), entry.key))
    if asr:
        for start in range(0, len(todo), 16):
            send_checks(todo[start : start + 16])
        console.print(f"{book}: {len(todo)} segment(s) sent for checking to {settings.qa.queue}; "
                      f"`f5-batch status {book}` shows the verdicts as they come")
        return
    _signal_checks_here(settings, storage, takes, todo)
    console.print(f"{book}: {len(todo)} segment(s) checked; failing ones were sent to render again")


def _signal_checks_here(settings: Settings, storage: Storage, takes: TakeRecords, todo: list[tuple[Job, str]]) -> None:
    """Signal checks need no recogniser: this process reads each take and judges it."""
    import hashlib

    from worker.qa.levels import VoiceLevels
    from worker.qa_tasks import signal_only
    from worker.runtime.chapters import ChapterTracker
    from worker.runtime.references import Reference

    levels, chapters = VoiceLevels(), ChapterTracker.for_results(settings.broker)
    clips: dict[str, Reference] = {}
    for job, key in todo:
        if job.voice.ref_audio not in clips:
            data = storage.get(job.voice.ref_audio)
            clips[job.voice.ref_audio] = Reference(data, hashlib.sha256(data).hexdigest())
        signal_only(job, key, None, storage, takes, chapters, levels, clips[job.voice.ref_audio])


@click.command("rerender")
@click.argument("book")
@click.argument("segment")
@click.option("--text", help="Speak the segment as this text instead (a new version of the book; kept by later "
              "enqueues).")
@click.option("--seed", type=click.IntRange(0), help="The new take's seed (default: a new one).")
@with_common
def rerender_command(book: str, segment: str, text: str | None, seed: int | None, prefix: str,
                     manifest_dir: Path) -> None:
    """Render SEGMENT of BOOK again (its id, as `f5-batch review` lists it), as the review page's buttons do."""
    settings, app, storage, files, record, entries, takes = _book(book, prefix, manifest_dir)
    entry = next((e for e in entries if e.id == segment), None)
    if entry is None:
        raise click.ClickException(f"no segment {segment!r} in {book}")
    try:
        if text is not None:
            new_record, updated = edit_text(app, settings.broker.queue, storage, takes, record, entries, entry, text)
            files.write_record(new_record)
            if files.final.exists():
                from producer.manifest import write_atomic
                from worker.books.manifest import entry_line

                write_atomic(files.final, "".join(entry_line(updated if e.id == entry.id else e)
                                                  for e in entries).encode("utf-8"))
            console.print(f"{segment}: sent as {text!r} (version {new_record.version}, key {updated.key})")
        else:
            job = rerender(app, settings.broker.queue, takes, book, entry, seed)
            assert job.qa is not None
            console.print(f"{segment}: take {job.qa.attempt} sent (seed {job.resolved_seed()})")
    except ReviewError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("accept")
@click.argument("book")
@click.argument("segments", nargs=-1, required=True)
@with_common
def accept_command(book: str, segments: tuple[str, ...], prefix: str, manifest_dir: Path) -> None:
    """Keep the current take of each SEGMENT of BOOK (ids as `f5-batch review` lists them): a person listened and it
    is fine (a name the recogniser does not know, say). Accepted segments leave the review list and count as final."""
    _, _, _, _, _, entries, takes = _book(book, prefix, manifest_dir)
    by_id = {e.id: e for e in entries}
    unknown = [s for s in segments if s not in by_id]
    if unknown:
        raise click.ClickException(f"no segment {', '.join(map(repr, unknown))} in {book}")
    for segment in segments:
        try:
            record = accept(takes, book, by_id[segment])
        except ReviewError as exc:
            raise click.ClickException(f"{segment}: {exc}") from None
        console.print(f"{segment}: take {record.best} accepted")
