"""``f5-batch enqueue`` and ``f5-batch resume``."""

from __future__ import annotations

import re
from pathlib import Path

import click

from producer import corpus
from producer.enqueue import (
    EnqueueInterrupted,
    corpus_size,
    finish_manifest,
    publish_book,
)
from producer.interrupts import interruptible
from producer.jobs import BOOK_ID, batch_messages, book_record, entry_job, single_messages, single_task_id
from producer.manifest import ManifestFiles, write_atomic
from producer.progress import DEFAULT_INTERVAL_S, console
from producer.publish import BrokerUnavailable, Publisher, check_broker, queue_empty
from producer.reading import CorpusError
from producer.tracking import LostMessages, follow, load_entries, load_record
from worker.books.manifest import BookRecord, ManifestEntry, book_dir_key, entry_line
from worker.books.status import stored_keys, task_states
from worker.constants import PRIORITY_BOOKS, TASK_SYNTHESIZE
from worker.contract import JobParams, VoiceSpec
from worker.settings import load_settings
from worker.speech import max_chars_for_reference
from worker.storage import Storage, by_url
from worker.voices import Voice, VoiceError, load_voice, voice_from_key

INTERRUPTED_EXIT = 130

common = [
    click.option("--prefix", default="books", show_default=True, help="Key prefix under the storage URL."),
    click.option("--manifest-dir", default="manifests", show_default=True, type=click.Path(path_type=Path)),
]
progress_option = click.option(
    "--progress-every", "interval_s", default=DEFAULT_INTERVAL_S, show_default=True, type=click.FloatRange(min=0.1),
    envvar="F5_PROGRESS_INTERVAL", help="Seconds between progress lines when stderr is not a terminal, and between "
    "notices of why the producer waits.")
resend_option = click.option(
    "--resend-after", "resend_after", default=120.0, show_default=True, type=click.FloatRange(min=1),
    envvar="F5_RESEND_AFTER", help="With --wait: when nothing is stored for this long, the queue is empty and no "
    "worker holds a message, send the missing segments again (their messages were lost, as in a broker failover).")


def with_common(function):
    for option in reversed(common):
        function = option(function)
    return function


def _context() -> tuple:
    from worker.celery_app import app

    settings = load_settings()
    return settings, app, by_url(settings.storage.storage_url, settings.storage)


def _voice(storage: Storage, name: str | None, ref_audio: str | None, ref_text: str | None) -> Voice:
    if name and (ref_audio or ref_text):
        raise click.UsageError("give --voice NAME, or --ref-audio KEY with --ref-text, not both")
    if name:
        return load_voice(storage, name)
    if not (ref_audio and ref_text):
        raise click.UsageError("give --voice NAME, or --ref-audio KEY with --ref-text")
    return voice_from_key(storage, ref_audio, ref_text)


def _upload_manifest(storage: Storage, files: ManifestFiles, prefix: str, book: str) -> None:
    folder = book_dir_key(prefix, book)
    storage.put(f"{folder}/manifest.jsonl", files.final.read_bytes(), content_type="application/x-ndjson")
    storage.put(f"{folder}/book.json", files.record.read_bytes(), content_type="application/json")


def _chapter_range(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        low, _, high = text.partition("-")
        return int(low), int(high or low)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use N or N-M", param_hint="--chapters") from None


def only_chapters(items, chapter_range: str | None):
    """Segments or manifest entries of the chapters in ``chapter_range`` (``N`` or ``N-M``; None: all)."""
    bounds = _chapter_range(chapter_range)
    return items if bounds is None else (item for item in items if bounds[0] <= item.chapter <= bounds[1])


def _segments(record: BookRecord, path: Path):
    """The book's segments, in reading order, as the record says to cut them."""
    stream = corpus.segments(path, record.max_chars, record.lang, record.encoding, record.chapter_regex)
    return only_chapters(stream, record.chapters)


@click.command("enqueue")
@click.argument("corpus_path", metavar="CORPUS", type=click.Path(path_type=Path))
@click.option("--book", required=True, help="Book id: letters, digits, '.', '_', '-'.")
@click.option("--voice", "voice_name", help="A voice added with `f5-batch voice add`.")
@click.option("--ref-audio", help="Key of a reference clip in storage (instead of --voice).")
@click.option("--ref-text", help="Transcript of --ref-audio.")
@click.option("--lang", type=click.Choice(["es", "en", "auto"]), default="auto", show_default=True)
@click.option("--max-chars", type=click.IntRange(min=20), help="Segment limit (UTF-8 bytes of spoken text). "
              "Default: upstream's rule from the reference's length.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Segments of similar length per f5tts.synthesize_batch message; 1 sends one f5tts.synthesize "
                   "message per segment. Workers gather messages into full passes either way; batches cut the "
                   "publishing cost (about 1.5 ms a message).")
@click.option("--max-queued", default=2000, show_default=True, type=click.IntRange(min=1),
              help="Backpressure: at most this many messages waiting in the queue.")
@click.option("--priority", type=click.IntRange(0, 9), default=PRIORITY_BOOKS, show_default=True,
              help="Redis priority, 0 (served first) to 9. Books wait behind interactive requests (0) and single "
                   "jobs from the gateway (3).")
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("--chapter-regex", help="Regex matching chapter headings (at the start of a paragraph).")
@click.option("--chapters", "chapter_range", help="Only these chapters, e.g. 1-2 or 5 (0 is front matter).")
@click.option("--nfe-step", default=16, show_default=True, type=int)
@click.option("--cfg-strength", default=2.0, show_default=True, type=float)
@click.option("--speed", default=1.0, show_default=True, type=float)
@click.option("--seed", type=int, help="One seed for every segment; default: derived per segment from content.")
@click.option("--force", is_flag=True, help="Publish every segment again, even those a manifest lists.")
@click.option("--wait", is_flag=True, help="Follow the book until every segment is rendered or failed.")
@click.option("--assemble", "auto_assemble", type=click.Choice(["wav", "flac", "ogg", "opus", "mp3"]),
              help="Assemble each chapter automatically (on the f5tts-cpu queue) once its segments are stored.")
@with_common
@progress_option
@resend_option
def enqueue(corpus_path: Path, book: str, voice_name: str | None, ref_audio: str | None, ref_text: str | None,
            lang: str, max_chars: int | None, batch_size: int, max_queued: int, priority: int | None,
            encoding: str, chapter_regex: str | None, chapter_range: str | None, nfe_step: int,
            cfg_strength: float, speed: float, seed: int | None, force: bool, wait: bool,
            auto_assemble: str | None, prefix: str, manifest_dir: Path, interval_s: float, resend_after: float) -> None:
    """Split CORPUS (.txt, .md, .jsonl, .epub) into segments and enqueue one job per segment (or per batch)."""
    if not re.match(BOOK_ID, book):
        raise click.BadParameter(f"{book!r}: use letters, digits, '.', '_' and '-'", param_hint="--book")
    try:
        params = JobParams(nfe_step=nfe_step, cfg_strength=cfg_strength, speed=speed, seed=seed)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    settings, app, storage = _context()
    try:
        check_broker(app)
        voice = _voice(storage, voice_name, ref_audio, ref_text)
        limit = max_chars or max_chars_for_reference(voice.ref_text, voice.planning_seconds, speed)
        stream = corpus.segments(corpus_path, limit, lang, encoding, chapter_regex)
        first = next(iter(only_chapters(stream, chapter_range)), None)  # file errors surface here
    except (BrokerUnavailable, CorpusError, VoiceError) as exc:
        raise click.ClickException(str(exc)) from None
    if first is None:
        raise click.ClickException(f"{corpus_path}: no text to speak")
    spec = VoiceSpec(ref_audio=voice.ref_audio, ref_text=voice.ref_text)
    detected = corpus.detect_language(first.raw) if lang == "auto" else lang
    record = book_record(book, prefix, spec, params, detected, limit, batch_size, priority, corpus_path)
    record = record.model_copy(update={"encoding": encoding, "chapter_regex": chapter_regex,
                                       "chapters": chapter_range})
    record.extra["assemble"] = auto_assemble
    files = ManifestFiles(manifest_dir, book)
    if force:
        files.partial.unlink(missing_ok=True)
    _run(settings, app, storage, record, files, corpus_path, voice, max_queued, interval_s, force=force)
    if wait:
        _wait(app, settings, storage, files, record, interval_s, max_queued, resend_after)


def _run(settings, app, storage: Storage, record: BookRecord, files: ManifestFiles, corpus_path: Path, voice: Voice,
         max_queued: int, interval_s: float, force: bool = False) -> None:
    """Publish the book's segments that are not published yet, then complete and upload its manifest."""
    closer = None
    if record.extra.get("assemble"):
        from producer.autoassemble import ChapterCloser
        from worker.runtime.chapters import ChapterTracker

        closer = ChapterCloser(ChapterTracker.for_results(settings.broker), app, record.book,
                               {"prefix": record.prefix, "format": record.extra["assemble"]})
    already = set() if force else {(e.id, e.task_id) for e in files.read_entries()}
    files.write_record(record)
    segments = _segments(record, corpus_path)
    messages = batch_messages(record, segments, voice.planning_seconds) if record.batch_size > 1 else \
        single_messages(record, segments)
    try:
        with interruptible():
            result = publish_book(messages, files, already, queue=settings.broker.queue, max_queued=max_queued,
                                  priority=record.priority, title=f"enqueue {record.book}",
                                  total_bytes=corpus_size(corpus_path), interval_s=interval_s, closer=closer)
    except EnqueueInterrupted as stopped:
        console.print(f"{record.book}: interrupted after {stopped.segments} segments; the manifest "
                      f"{files.partial} lists them. `f5-batch resume {record.book}` continues.")
        raise SystemExit(INTERRUPTED_EXIT) from None
    except (BrokerUnavailable, CorpusError) as exc:
        raise click.ClickException(f"{exc} (the partial manifest {files.partial} lets a re-run continue)") from None
    finish_manifest(files)
    record.segments, record.complete = result.segments, True
    files.write_record(record)
    _upload_manifest(storage, files, record.prefix, record.book)
    rate = result.segments / result.elapsed_s if result.elapsed_s else 0
    console.print(f"{record.book}: {result.segments} segments, {result.published} messages published, "
                  f"{result.skipped} already published, in {result.elapsed_s:.1f} s ({rate:.0f} segments/s); "
                  f"manifest {files.final}")


def _wait(app, settings, storage, files: ManifestFiles, record: BookRecord, interval_s: float, max_queued: int,
          resend_after_s: float) -> None:
    from worker.runtime.deadletter import DeadLetters

    entries, queue = files.read_entries(), settings.broker.queue

    def never_started(ids: set[str]) -> set[str]:
        current = {e.id: e.task_id for e in files.read_entries() if e.id in ids}
        states = task_states(app, sorted(set(current.values())))
        return {job_id for job_id, task_id in current.items() if states.get(task_id, "PENDING") == "PENDING"}

    lost = LostMessages(queue_empty=lambda: queue_empty(app, queue), never_started=never_started,
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


def _continue_enqueue(settings, app, storage: Storage, record: BookRecord, files: ManifestFiles, max_queued: int,
                      interval_s: float) -> None:
    """An interrupted enqueue: publish the rest of the book from its corpus, as the first run would have."""
    corpus_path = Path(record.corpus)
    if not corpus_path.is_file():
        raise click.ClickException(f"the enqueue of {record.book} was interrupted, and its corpus {corpus_path} is "
                                   "not here to continue from; run `f5-batch enqueue` with the corpus again")
    try:
        voice = voice_from_key(storage, record.voice.ref_audio, record.voice.ref_text)
    except VoiceError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"{record.book}: the enqueue was interrupted; continuing it from {corpus_path}")
    _run(settings, app, storage, record, files, corpus_path, voice, max_queued, interval_s)


@click.command("resume")
@click.argument("book")
@click.option("--max-queued", default=2000, show_default=True, type=click.IntRange(min=1))
@click.option("--wait", is_flag=True)
@with_common
@progress_option
@resend_option
def resume(book: str, max_queued: int, wait: bool, prefix: str, manifest_dir: Path, interval_s: float,
           resend_after: float) -> None:
    """Finish an interrupted enqueue of BOOK, then re-enqueue every segment whose audio is not in storage. Safe to run
    any number of times."""
    settings, app, storage = _context()
    files = ManifestFiles(manifest_dir, book)
    try:
        check_broker(app)
    except BrokerUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    record = load_record(files, storage, prefix, book)
    if record is None:
        raise click.ClickException(f"no record of book {book!r} in {manifest_dir} or in {storage.url}")
    if not record.complete:
        _continue_enqueue(settings, app, storage, record, files, max_queued, interval_s)
    try:
        entries = load_entries(files, storage, prefix, book)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    missing = resend_missing(app, settings.broker.queue, max_queued, record, files, storage, entries)
    console.print(f"{book}: {len(entries) - missing} of {len(entries)} segments stored; {missing} re-enqueued")
    if wait:
        _wait(app, settings, storage, files, record, interval_s, max_queued, resend_after)


def resend_missing(app, queue: str, max_queued: int, record: BookRecord, files: ManifestFiles, storage: Storage,
                   entries: list[ManifestEntry], only: set[str] | None = None) -> int:
    """Send one ``f5tts.synthesize`` job for each segment whose audio is not stored (``only``: among these ids), and
    point the manifest at the new task ids. Returns how many were sent."""
    present = stored_keys(storage, record.prefix, record.book)
    missing = [e for e in entries if e.key not in present and (only is None or e.id in only)]
    updated: dict[str, ManifestEntry] = {}
    with Publisher(app, queue, max_queued, record.priority) as publisher:
        for entry in missing:
            job = entry_job(record, entry)
            task_id = single_task_id(job)
            publisher.publish(TASK_SYNTHESIZE, {"job": job.model_dump(mode="json", exclude_none=True)}, task_id)
            updated[entry.id] = entry.model_copy(update={"task_id": task_id, "task": TASK_SYNTHESIZE})
    if updated:
        rewritten = [updated.get(entry.id, entry) for entry in entries]
        write_atomic(files.final, "".join(entry_line(e) for e in rewritten).encode("utf-8"))
        files.partial.unlink(missing_ok=True)
        _upload_manifest(storage, files, record.prefix, record.book)
    return len(missing)
