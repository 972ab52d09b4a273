"""``f5-batch enqueue`` and ``f5-batch resume``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from producer import corpus
from producer.enqueue import (
    BOOK_ID,
    Message,
    batch_messages,
    book_record,
    entry_job,
    segment_key,
    single_messages,
    single_task_id,
)
from producer.manifest import ManifestFiles, write_atomic
from producer.pipelined import PipelinedPublisher
from producer.progress import bar, console
from producer.publish import BrokerUnavailable, Publisher, check_broker
from producer.reading import CorpusError
from producer.tracking import follow, load_entries, stored_keys
from worker.books.manifest import BookRecord, ManifestEntry, book_dir_key, entry_line
from worker.constants import TASK_SYNTHESIZE
from worker.contract import JobParams, VoiceSpec
from worker.settings import load_settings
from worker.speech import max_chars_for_reference
from worker.storage import Storage, by_url
from worker.voices import Voice, VoiceError, load_voice, voice_from_key

common = [
    click.option("--prefix", default="books", show_default=True, help="Key prefix under the storage URL."),
    click.option("--manifest-dir", default="manifests", show_default=True, type=click.Path(path_type=Path)),
]


def with_common(function):
    for option in reversed(common):
        function = option(function)
    return function


def _context() -> tuple:
    from worker.app import app

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


@click.command("enqueue")
@click.argument("corpus_path", metavar="CORPUS", type=click.Path(path_type=Path))
@click.option("--book", required=True, help="Book id: letters, digits, '.', '_', '-'.")
@click.option("--voice", "voice_name", help="A voice added with `f5-batch voice add`.")
@click.option("--ref-audio", help="Key of a reference clip in storage (instead of --voice).")
@click.option("--ref-text", help="Transcript of --ref-audio.")
@click.option("--lang", type=click.Choice(["es", "en", "auto"]), default="auto", show_default=True)
@click.option("--max-chars", type=click.IntRange(min=20), help="Segment limit (UTF-8 bytes of spoken text). "
              "Default: upstream's rule from the reference's length.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Segments of similar length per f5tts.synthesize_batch job; 1 sends one f5tts.synthesize job "
                   "per segment (about 1.5 ms of publishing each, so a book takes ~4x longer to enqueue).")
@click.option("--max-queued", default=2000, show_default=True, type=click.IntRange(min=1),
              help="Backpressure: at most this many jobs waiting in the queue.")
@click.option("--priority", type=click.IntRange(0, 9), help="Redis priority, 0 (first) to 9.")
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
def enqueue(corpus_path: Path, book: str, voice_name: str | None, ref_audio: str | None, ref_text: str | None,
            lang: str, max_chars: int | None, batch_size: int, max_queued: int, priority: int | None,
            encoding: str, chapter_regex: str | None, chapter_range: str | None, nfe_step: int,
            cfg_strength: float, speed: float, seed: int | None, force: bool, wait: bool,
            auto_assemble: str | None, prefix: str, manifest_dir: Path) -> None:
    """Split CORPUS (.txt, .md, .jsonl, .epub) into segments and enqueue one job per segment (or per batch)."""
    import re

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
        stream = _only_chapters(corpus.segments(corpus_path, limit, lang, encoding, chapter_regex), chapter_range)
        first = next(stream, None)  # reads the corpus head: file errors surface before anything is written
    except (BrokerUnavailable, CorpusError, VoiceError) as exc:
        raise click.ClickException(str(exc)) from None
    if first is None:
        raise click.ClickException(f"{corpus_path}: no text to speak")
    spec = VoiceSpec(ref_audio=voice.ref_audio, ref_text=voice.ref_text)
    detected = corpus.detect_language(first.raw) if lang == "auto" else lang
    record = book_record(book, prefix, spec, params, detected, limit, batch_size, priority, corpus_path)
    record.extra["assemble"] = auto_assemble
    closer = None
    if auto_assemble:
        from producer.autoassemble import ChapterCloser
        from worker.runtime.chapters import ChapterTracker

        closer = ChapterCloser(ChapterTracker(settings.broker.resolved_result_backend), app, book,
                               {"prefix": prefix, "format": auto_assemble})
    files = ManifestFiles(manifest_dir, book)
    already = set() if force else {(e.id, e.task_id) for e in files.read_entries()}
    files.write_record(record)
    segments = _chain(first, stream)
    messages = batch_messages(record, segments, voice.planning_seconds) if batch_size > 1 else \
        single_messages(record, segments)
    started = time.monotonic()
    try:
        count, skipped, publisher_stats = _publish_all(app, settings.broker.queue, max_queued, priority, messages,
                                                       files, already, corpus_path, book, closer)
    except (BrokerUnavailable, CorpusError) as exc:
        raise click.ClickException(f"{exc} (the partial manifest {files.partial} lets a re-run continue)") from None
    os.replace(files.partial, files.final)
    record.segments, record.complete = count, True
    files.write_record(record)
    _upload_manifest(storage, files, prefix, book)
    elapsed = time.monotonic() - started
    console.print(f"{book}: {count} segments, {publisher_stats[0]} messages published, {skipped} already published, "
                  f"in {elapsed:.1f} s ({count / elapsed if elapsed else 0:.0f} segments/s); manifest {files.final}")
    if wait:
        _wait(app, settings, storage, files, prefix, book)


def _only_chapters(stream, chapter_range: str | None):
    if not chapter_range:
        return stream
    try:
        low, _, high = chapter_range.partition("-")
        first, last = int(low), int(high or low)
    except ValueError:
        raise click.BadParameter(f"{chapter_range!r}: use N or N-M", param_hint="--chapters") from None
    return (segment for segment in stream if first <= segment.chapter <= last)


def _chain(first, rest):
    yield first
    yield from rest


def _publish_all(app, queue: str, max_queued: int, priority: int | None, messages, files: ManifestFiles,
                 already: set, corpus_path: Path, book: str, closer=None) -> tuple[int, int, tuple[int, float]]:
    """Publish every message (in a pipelined child process) and write each manifest line once it is published."""
    total_bytes = max(1, corpus_path.stat().st_size) if corpus_path.is_file() else 1
    count = skipped = 0
    files.folder.mkdir(parents=True, exist_ok=True)
    waiting: dict[int, Message] = {}
    with files.partial.open("w", encoding="utf-8") as out, bar("bytes") as progress:
        task = progress.add_task(f"enqueue {book}", total=total_bytes, rate="")
        started = time.monotonic()

        def written(confirmed: list[int]) -> None:
            nonlocal count
            for seq in confirmed:
                message = waiting.pop(seq)
                out.writelines(entry_line(entry) for entry in message.entries)
                if closer is not None:
                    closer.confirmed(message)
                count += len(message.entries)
                progress.update(task, advance=sum(len(e.text.encode()) for e in message.entries))
            out.flush()
            rate = count / max(1e-6, time.monotonic() - started)
            progress.update(task, rate=f"{count} segments, {rate:.0f}/s")

        publisher = PipelinedPublisher(queue, max_queued, written, priority)
        try:
            for seq, message in enumerate(messages):
                waiting[seq] = message
                if closer is not None:
                    closer.produced(message)
                if all((entry.id, entry.task_id) in already for entry in message.entries):
                    skipped += len(message.entries)
                    written([seq])  # published by an earlier run; recorded again, not sent again
                    continue
                publisher.submit(seq, message.task, message.kwargs, message.task_id, message.summary)
            publisher.finish()
            if closer is not None:
                closer.finish()
        except BaseException:
            publisher.abort()
            raise
        progress.update(task, completed=total_bytes)
    return count, skipped, (publisher.published, publisher.waited_s)


def _wait(app, settings, storage, files: ManifestFiles, prefix: str, book: str) -> None:
    from worker.runtime.deadletter import DeadLetters

    status = follow(app, storage, DeadLetters(settings.broker.resolved_result_backend), files.read_entries(),
                    prefix, book)
    if status.failed:
        for job_id, reason in sorted(status.failed.items())[:20]:
            console.print(f"[red]failed[/] {job_id}: {reason['code']}: {reason['message']}")
        raise click.ClickException(f"{len(status.failed)} of {status.total} segments failed")
    console.print(f"{book}: all {status.total} segments rendered")


@click.command("resume")
@click.argument("book")
@click.option("--max-queued", default=2000, show_default=True, type=click.IntRange(min=1))
@click.option("--wait", is_flag=True)
@with_common
def resume(book: str, max_queued: int, wait: bool, prefix: str, manifest_dir: Path) -> None:
    """Re-enqueue every segment of BOOK whose audio is not in storage. Safe to run any number of times."""
    settings, app, storage = _context()
    files = ManifestFiles(manifest_dir, book)
    try:
        check_broker(app)
        entries = load_entries(files, storage, prefix, book)
    except (BrokerUnavailable, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    record = files.read_record()
    if record is None:
        record = BookRecord.model_validate_json(storage.get(f"{book_dir_key(prefix, book)}/book.json"))
        files.write_record(record)
    present = stored_keys(storage, prefix, book)
    missing = [entry for entry in entries if entry.key not in present]
    updated: dict[str, ManifestEntry] = {}
    with Publisher(app, settings.broker.queue, max_queued, record.priority) as publisher:
        for entry in missing:
            job = entry_job(record, entry)
            task_id = single_task_id(job)
            publisher.publish(TASK_SYNTHESIZE, {"job": job.model_dump(mode="json", exclude_none=True)}, task_id)
            updated[entry.id] = entry.model_copy(update={"task_id": task_id, "task": TASK_SYNTHESIZE})
    if updated:
        rewritten = [updated.get(entry.id, entry) for entry in entries]
        write_atomic(files.final, "".join(entry_line(e) for e in rewritten).encode("utf-8"))
        files.partial.unlink(missing_ok=True)
        _upload_manifest(storage, files, prefix, book)
    console.print(f"{book}: {len(entries) - len(missing)} of {len(entries)} segments stored; "
                  f"{len(missing)} re-enqueued")
    if wait:
        _wait(app, settings, storage, files, prefix, book)


__all__ = ["enqueue", "resume", "segment_key"]
