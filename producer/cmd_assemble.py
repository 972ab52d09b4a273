"""``f5-batch assemble``: chapter files, the annotated manifest, dataset exports, and optionally one .m4b."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import click

from producer.cmd_enqueue import _context, only_chapters, with_common
from producer.manifest import ManifestFiles, write_atomic
from producer.progress import bar, console
from producer.tracking import load_entries, load_record
from worker.assembly.audio_out import FORMATS, Levelling
from worker.assembly.stitch import (
    AssembleOptions,
    MissingSegments,
    annotate,
    assemble_chapter,
    by_chapter,
    dataset_files,
    missing_keys,
    new_workdir,
    write_m4b,
)
from worker.books.manifest import BookRecord, book_dir_key, entry_line
from worker.constants import HOP_LENGTH, SAMPLE_RATE
from worker.speech import estimated_frames, planning_seconds


@click.command("assemble")
@click.argument("book")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="wav", show_default=True)
@click.option("--quality", type=click.FloatRange(0, 1), help="Compressed formats: 0 (smallest) to 1 (best).")
@click.option("--cbr", is_flag=True, help="Constant bitrate for MP3 and Opus (default: variable).")
@click.option("--sentence-pause", default=0.3, show_default=True, type=click.FloatRange(0, 10), help="Seconds.")
@click.option("--paragraph-pause", default=0.8, show_default=True, type=click.FloatRange(0, 10), help="Seconds.")
@click.option("--title-pause", default=1.5, show_default=True, type=click.FloatRange(0, 10),
              help="Seconds after a chapter title.")
@click.option("--loudness", default=-20.0, show_default=True, type=click.FloatRange(-40, -6),
              help="Speech level (dBFS RMS) every segment is brought to.")
@click.option("--chapters", "chapter_range", help="Only these chapters, e.g. 1-2 or 5.")
@click.option("--allow-gaps", is_flag=True, help="Fill missing segments with silence (recorded in the manifest).")
@click.option("--m4b", is_flag=True, help="Also write one .m4b with chapter marks (needs ffmpeg).")
@with_common
def assemble(book: str, fmt: str, quality: float | None, cbr: bool, sentence_pause: float, paragraph_pause: float,
             title_pause: float, loudness: float, chapter_range: str | None, allow_gaps: bool, m4b: bool,
             prefix: str, manifest_dir: Path) -> None:
    """Stitch BOOK's segments into chapters/NNN.<format> beside them, and annotate the manifest."""
    _, _, storage = _context()
    files = ManifestFiles(manifest_dir, book)
    try:
        entries = load_entries(files, storage, prefix, book)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    selected = list(only_chapters(entries, chapter_range))
    options = AssembleOptions(fmt=fmt, quality=quality, constant_bitrate=cbr, sentence_pause_s=sentence_pause,
                              paragraph_pause_s=paragraph_pause, title_pause_s=title_pause,
                              levelling=Levelling(target_dbfs=loudness), allow_gaps=allow_gaps)
    missing = missing_keys(storage, prefix, book, selected)
    if missing and not allow_gaps:
        raise click.ClickException(str(MissingSegments(missing)))
    record = load_record(files, storage, prefix, book)
    ref_seconds = _reference_seconds(storage, record)

    def gap_seconds(entry) -> float:
        if record is None or ref_seconds is None:
            return 0.07 * len(entry.normalized)  # a narrator's pace, when the voice is unknown
        frames = estimated_frames(ref_seconds, record.voice.ref_text, entry.normalized, record.params.speed) \
            - int(ref_seconds * SAMPLE_RATE) // HOP_LENGTH
        return frames * HOP_LENGTH / SAMPLE_RATE

    workdir = new_workdir()
    started = time.monotonic()
    chapters = []
    try:
        groups = by_chapter(selected)
        with bar("chapters") as progress:
            task = progress.add_task(f"assemble {book}", total=len(groups), rate="")
            for chapter_entries in groups.values():
                chapters.append(assemble_chapter(storage, prefix, book, chapter_entries, options, workdir,
                                                 gap_seconds))
                progress.update(task, advance=1, rate=f"{sum(c.duration_s for c in chapters) / 3600:.2f} h")
        _write_outputs(storage, files, prefix, book, entries, chapters, options)
        if m4b:
            try:
                output = workdir / f"{book}.m4b"
                write_m4b(chapters, workdir, output, book)
                storage.put_file(f"{book_dir_key(prefix, book)}/{book}.m4b", output, content_type="audio/mp4")
            except FileNotFoundError as exc:
                raise click.ClickException(str(exc)) from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    hours = sum(c.duration_s for c in chapters) / 3600
    elapsed = time.monotonic() - started
    gaps = sum(p.gap for c in chapters for p in c.segments)
    console.print(f"{book}: {len(chapters)} chapter(s), {hours:.2f} h of audio, "
                  f"{sum(c.bytes for c in chapters) / 2**20:.1f} MB of {fmt}, in {elapsed:.1f} s"
                  + (f"; {gaps} gap(s) filled with silence" if gaps else ""))


def _reference_seconds(storage, record: BookRecord | None) -> float | None:
    if record is None:
        return None
    import io

    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(storage.get(record.voice.ref_audio)))
    except Exception:
        return None
    return planning_seconds(info.frames / info.samplerate)


def _write_outputs(storage, files: ManifestFiles, prefix: str, book: str, entries, chapters, options) -> None:
    annotated = annotate(entries, chapters)
    folder = book_dir_key(prefix, book)
    manifest = "".join(entry_line(e) for e in annotated).encode("utf-8")
    write_atomic(files.final, manifest)
    storage.put(f"{folder}/manifest.jsonl", manifest, content_type="application/x-ndjson")
    try:  # chapters assembled by earlier runs stay listed; this run's chapters replace theirs
        earlier = json.loads(storage.get(f"{folder}/chapters.json"))["chapters"]
    except (KeyError, ValueError):
        earlier = []
    fresh = {c.chapter: {"chapter": c.chapter, "title": c.title, "key": c.key, "format": options.fmt,
                         "duration_s": round(c.duration_s, 3), "bytes": c.bytes, "segments": len(c.segments),
                         "gaps": [p.id for p in c.segments if p.gap]} for c in chapters}
    merged = {item["chapter"]: item for item in earlier} | fresh
    storage.put(f"{folder}/chapters.json", json.dumps({"chapters": [merged[k] for k in sorted(merged)]},
                                                      ensure_ascii=False, indent=2).encode(),
                content_type="application/json")
    for key, data in dataset_files(annotated, prefix, book).items():
        storage.put(key, data, content_type="text/plain")
