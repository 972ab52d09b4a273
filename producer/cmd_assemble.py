"""``f5-batch assemble``: chapter files, the annotated manifest, dataset exports, and optionally one .m4b."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import click

from producer.cmd_enqueue import _context, only_chapters, with_common
from producer.manifest import ManifestFiles, write_atomic
from producer.progress import bar, console
from producer.tracking import load_entries, load_record
from worker.assembly.audio_out import FORMATS, Levelling
from worker.assembly.naming import audiobook_file_name
from worker.assembly.stitch import (
    AssembleOptions,
    ChapterFile,
    MissingSegments,
    annotate,
    assemble_chapter,
    by_chapter,
    dataset_files,
    missing_keys,
    new_workdir,
    write_m4b,
)
from worker.assembly.tags import Cover, Track, chapter_title, tag_chapter_file
from worker.books.manifest import BookRecord, ManifestEntry, book_dir_key, entry_line
from worker.books.meta import BookMeta
from worker.constants import HOP_LENGTH, SAMPLE_RATE
from worker.keys import validate_key
from worker.settings import Settings
from worker.speech import estimated_frames, planning_seconds
from worker.storage import ObjectNotFound, Storage


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
@click.option("--m4b", is_flag=True, help="Also write one .m4b with chapter marks, tags and cover (needs ffmpeg).")
@click.option("-o", "--output", help="The .m4b's file name (default: 'Author - Title.m4b'), stored beside the "
              "chapters.")
@click.option("--title", help="The book's title (default: the EPUB's).")
@click.option("--author", help="The author(s), as one credit line (default: the EPUB's).")
@click.option("--narrator", help="The narrator (default: the EPUB's, if it names one).")
@click.option("--year", type=click.IntRange(0, 9999), help="Year of publication (default: the EPUB's).")
@click.option("--language", help="BCP 47 language tag, e.g. es or en-GB (default: the EPUB's).")
@click.option("--description", help="A description or blurb (default: the EPUB's).")
@click.option("--cover", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Cover image, JPEG or PNG (default: the EPUB's).")
@with_common
def assemble(book: str, fmt: str, quality: float | None, cbr: bool, sentence_pause: float, paragraph_pause: float,
             title_pause: float, loudness: float, chapter_range: str | None, allow_gaps: bool, m4b: bool,
             output: str | None, title: str | None, author: str | None, narrator: str | None, year: int | None,
             language: str | None, description: str | None, cover: Path | None, prefix: str,
             manifest_dir: Path) -> None:
    """Stitch BOOK's segments into chapters/NNN.<format> beside them, tagged with the book's metadata (MP3, FLAC,
    Ogg), and annotate the manifest."""
    if output is not None and not m4b:
        raise click.UsageError("--output names the .m4b: add --m4b")
    m4b_name = _checked_name(output) if output is not None else None
    settings, _, storage = _context()
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
    meta = (record.meta if record is not None else BookMeta()).overridden(
        title=title, author=author, narrator=narrator, year=year, language=language, description=description)
    art = _cover(storage, meta, cover)
    tag = _chapter_tagger(fmt, sorted({e.chapter for e in entries}), meta, art)

    def gap_seconds(entry: ManifestEntry) -> float:
        if record is None or ref_seconds is None:
            return 0.07 * len(entry.normalized)  # a narrator's pace, when the voice is unknown
        frames = estimated_frames(ref_seconds, record.voice.ref_text, entry.normalized, record.params.speed) \
            - int(ref_seconds * SAMPLE_RATE) // HOP_LENGTH
        return frames * HOP_LENGTH / SAMPLE_RATE

    workdir = new_workdir()
    started = time.monotonic()
    chapters: list[ChapterFile] = []
    try:
        groups = by_chapter(selected)
        with bar("chapters") as progress:
            task = progress.add_task(f"assemble {book}", total=len(groups), rate="")
            for chapter_entries in groups.values():
                chapters.append(assemble_chapter(storage, prefix, book, chapter_entries, options, workdir,
                                                 gap_seconds, tag))
                progress.update(task, advance=1, rate=f"{sum(c.duration_s for c in chapters) / 3600:.2f} h")
        states = _quality(settings, book, entries)
        _write_outputs(storage, files, prefix, book, entries, chapters, options, states)
        if m4b:
            try:
                local = workdir / "book.m4b"
                write_m4b(chapters, workdir, local, meta, book, art)
                name = m4b_name or audiobook_file_name(meta, book)
                storage.put_file(f"{book_dir_key(prefix, book)}/{name}", local, content_type="audio/mp4")
                console.print(f"{book}: {name}")
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
    in_chapters = {e.key for e in selected}
    flagged = sum(1 for key, state in states.items() if state == "needs_review" and key in in_chapters)
    if flagged:
        console.print(f"[yellow]{book}: {flagged} segment(s) need review[/]; they are in the chapters with their best "
                      f"take (`f5-batch review {book}`, or the gateway's review page)")


def _quality(settings: Settings, book: str, entries: list[ManifestEntry]) -> dict[str, str]:
    """Each segment's quality state, where the gate has judged it (empty when Redis cannot be reached)."""
    from worker.runtime.takes import TakeRecords

    try:
        records = TakeRecords.for_results(settings.broker).by_key(book, [e.key for e in entries])
    except Exception as exc:
        console.print(f"[yellow]quality states unavailable[/] ({exc})")
        return {}
    return {key: record.state for key, record in records.items()}


def _checked_name(name: str) -> str:
    """An --output name as given (plus .m4b), if storage can hold it beside the chapters."""
    name = name if name.lower().endswith(".m4b") else f"{name}.m4b"
    try:
        if "/" in name:
            raise ValueError("a name, not a path")
        validate_key(name)
    except ValueError as exc:
        raise click.BadParameter(f"{name!r}: {exc}", param_hint="--output") from None
    return name


def _cover(storage: Storage, meta: BookMeta, path: Path | None) -> Cover | None:
    """The cover: --cover's file, else the one enqueue stored from the EPUB; None without one."""
    if path is not None:
        art = Cover.from_bytes(path.read_bytes())
        if art is None:
            raise click.BadParameter(f"{path}: not a JPEG or PNG image", param_hint="--cover")
        return art
    if not meta.cover_key:
        return None
    try:
        return Cover.from_bytes(storage.get(meta.cover_key))
    except ObjectNotFound:
        console.print(f"the cover {meta.cover_key} is not in storage; the files will have none")
        return None


def _chapter_tagger(fmt: str, numbers: list[int], meta: BookMeta,
                    art: Cover | None) -> Callable[[Path, int, str], None]:
    """Tags each chapter file before its upload; track numbers count the book's chapters (front matter included)
    from 1, the same whichever --chapters are assembled."""
    places = {number: place for place, number in enumerate(numbers, start=1)}

    def tag(path: Path, chapter: int, title: str) -> None:
        tag_chapter_file(path, fmt, Track(places[chapter], len(numbers), chapter_title(chapter, title)), meta, art)

    return tag


def _reference_seconds(storage: Storage, record: BookRecord | None) -> float | None:
    if record is None:
        return None
    import io

    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(storage.get(record.voice.ref_audio)))
    except Exception:
        return None
    return planning_seconds(info.frames / info.samplerate)


def _write_outputs(storage: Storage, files: ManifestFiles, prefix: str, book: str, entries: list[ManifestEntry],
                   chapters: list[ChapterFile], options: AssembleOptions,
                   quality: dict[str, str] | None = None) -> None:
    annotated = annotate(entries, chapters, quality)
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
