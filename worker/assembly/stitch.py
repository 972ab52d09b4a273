"""Assembling a book: each chapter's segments stitched in order, levelled, with pauses, into one file per chapter;
the manifest gains chapter durations and each segment's offset; dataset exports for TTS/ASR training.

Missing segments stop the assembly with their keys listed, before anything is written, unless ``allow_gaps`` fills
each hole with silence of the expected length and records it in the manifest.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from worker.assembly.audio_out import FORMATS, Levelling, open_writer, silence
from worker.assembly.ffmeta import ChapterMark, ffmetadata
from worker.assembly.tags import Cover, chapter_title, finish_m4b, iso639_2, m4b_tags
from worker.books.manifest import ManifestEntry, book_dir_key
from worker.books.meta import BookMeta
from worker.constants import SAMPLE_RATE
from worker.storage import Storage

log = logging.getLogger(__name__)


class MissingSegments(RuntimeError):
    def __init__(self, keys: list[str]) -> None:
        shown = "\n  ".join(keys[:20]) + (f"\n  … and {len(keys) - 20} more" if len(keys) > 20 else "")
        super().__init__(f"{len(keys)} segment(s) are not in storage yet; nothing was written:\n  {shown}\n"
                         "Run `f5-batch resume BOOK --wait`, or assemble with --allow-gaps to fill them with silence.")
        self.keys = keys


@dataclass(frozen=True)
class AssembleOptions:
    fmt: str = "wav"
    quality: float | None = None  # 0..1, 1 best, for compressed formats
    constant_bitrate: bool = False
    sentence_pause_s: float = 0.3
    paragraph_pause_s: float = 0.8
    title_pause_s: float = 1.5
    levelling: Levelling = field(default_factory=Levelling)
    allow_gaps: bool = False

    @property
    def extension(self) -> str:
        return FORMATS[self.fmt][2]

    def pause_after(self, entry: ManifestEntry) -> float:
        """The silence after a segment: what its text asked for ([pause 1.5s], a scene break), else the usual."""
        if entry.pause_after_s is not None:
            return entry.pause_after_s
        if entry.heading:
            return self.title_pause_s
        return self.paragraph_pause_s if entry.paragraph_end else self.sentence_pause_s


@dataclass
class Placement:
    id: str
    offset_s: float
    duration_s: float
    gap: bool = False


@dataclass
class ChapterFile:
    chapter: int
    title: str
    key: str
    duration_s: float
    bytes: int
    segments: list[Placement]


def chapter_key(prefix: str, book: str, chapter: int, extension: str) -> str:
    return f"{book_dir_key(prefix, book)}/chapters/{chapter:03d}.{extension}"


def by_chapter(entries: list[ManifestEntry]) -> dict[int, list[ManifestEntry]]:
    chapters: dict[int, list[ManifestEntry]] = {}
    for entry in entries:
        chapters.setdefault(entry.chapter, []).append(entry)
    return {number: sorted(items, key=lambda e: e.index) for number, items in sorted(chapters.items())}


def assemble_chapter(storage: Storage, prefix: str, book: str, entries: list[ManifestEntry],
                     options: AssembleOptions, workdir: Path,
                     gap_seconds: Callable[[ManifestEntry], float] | None = None,
                     before_upload: Callable[[Path, int, str], None] | None = None) -> ChapterFile:
    """Stream one chapter to a local file, segment by segment, then upload it. ``before_upload(path, chapter,
    title)`` may change the local file first (``f5-batch assemble`` tags it), so that it is uploaded once."""
    chapter = entries[0].chapter
    path = workdir / f"{chapter:03d}.{options.extension}"
    placements: list[Placement] = []
    position = 0
    with open_writer(path, options.fmt, SAMPLE_RATE, options.quality, options.constant_bitrate) as writer:
        for number, entry in enumerate(entries):
            gap = False
            try:
                samples, rate = sf.read(io.BytesIO(storage.get(entry.key)), dtype="float32")
                if rate != SAMPLE_RATE:
                    raise ValueError(f"{entry.key} is {rate} Hz; segments are {SAMPLE_RATE} Hz")
                samples = options.levelling.apply(samples, rate)
            except KeyError:
                if not options.allow_gaps or gap_seconds is None:
                    raise MissingSegments([entry.key]) from None
                samples, gap = silence(gap_seconds(entry), SAMPLE_RATE), True
                log.warning("gap: %s is missing; %.2f s of silence in its place", entry.key, samples.size / SAMPLE_RATE)
            writer.write(samples)
            placements.append(Placement(entry.id, position / SAMPLE_RATE, samples.size / SAMPLE_RATE, gap))
            position += samples.size
            if number < len(entries) - 1:
                pause = silence(options.pause_after(entry), SAMPLE_RATE)
                writer.write(pause)
                position += pause.size
    if before_upload is not None:
        before_upload(path, chapter, entries[0].chapter_title)
    key = chapter_key(prefix, book, chapter, options.extension)
    storage.put_file(key, path, {"f5-book": book, "f5-chapter": str(chapter)}, content_type=_content_type(options))
    return ChapterFile(chapter, entries[0].chapter_title, key, position / SAMPLE_RATE, path.stat().st_size,
                       placements)


def _content_type(options: AssembleOptions) -> str:
    return {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "opus": "audio/ogg",
            "mp3": "audio/mpeg"}[options.fmt]


def missing_keys(storage: Storage, prefix: str, book: str, entries: list[ManifestEntry]) -> list[str]:
    present = {info.key for info in storage.list(f"{book_dir_key(prefix, book)}/")}
    return [entry.key for entry in entries if entry.key not in present]


def annotate(entries: list[ManifestEntry], chapters: list[ChapterFile],
             quality: dict[str, str] | None = None) -> list[ManifestEntry]:
    """The manifest with each segment's place in its chapter file, each chapter's duration, and each segment's quality
    state (``quality``: key -> passed / rerendered / needs_review / accepted / pending)."""
    placed = {p.id: (c, p) for c in chapters for p in c.segments}
    annotated = []
    for entry in entries:
        if quality is not None and entry.key in quality:
            entry = entry.model_copy(update={"qa": quality[entry.key]})
        if entry.id not in placed:
            annotated.append(entry)
            continue
        chapter, placement = placed[entry.id]
        annotated.append(entry.model_copy(update={
            "offset_s": round(placement.offset_s, 6), "duration_s": round(placement.duration_s, 6),
            "gap": placement.gap, "chapter_key": chapter.key, "chapter_duration_s": round(chapter.duration_s, 6)}))
    return annotated


def dataset_files(entries: list[ManifestEntry], prefix: str, book: str) -> dict[str, bytes]:
    """LJSpeech-style ``metadata.csv`` (id|text|normalised text) and a JSONL manifest of the segments, each with its
    quality state. Segments that need review stay out of ``metadata.csv`` (training data should say its words)."""
    def clean(text: str) -> str:
        return " ".join(text.replace("|", "/").split())

    table = io.StringIO()
    writer = csv.writer(table, delimiter="|", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
    lines = []
    for entry in entries:
        if getattr(entry, "gap", False):
            continue
        state = getattr(entry, "qa", None)
        if state != "needs_review":
            writer.writerow([entry.id, clean(entry.text), clean(entry.normalized)])
        lines.append(json.dumps({"id": entry.id, "audio": entry.key, "text": clean(entry.text),
                                 "normalized_text": entry.normalized,
                                 "duration": getattr(entry, "duration_s", None), "chapter": entry.chapter,
                                 "voice": entry.voice or None, "qa": state}, ensure_ascii=False))
    folder = f"{book_dir_key(prefix, book)}/dataset"
    return {f"{folder}/metadata.csv": table.getvalue().encode("utf-8"),
            f"{folder}/manifest.jsonl": ("\n".join(lines) + "\n").encode("utf-8")}


def write_m4b(chapters: list[ChapterFile], workdir: Path, output: Path, meta: BookMeta, fallback_title: str,
              cover: Cover | None = None, bitrate: str = "64k") -> None:
    """One .m4b (AAC) of the chapter files in ``workdir``, with a chapter mark per chapter, the book's tags and its
    cover. Needs ffmpeg on the PATH.

    ffmpeg encodes and writes the chapter marks and the iTunes tags it knows (from an escaped FFMETADATA file, see
    ``worker.assembly.ffmeta``); mutagen then adds what its muxer cannot (cover, narrator atoms:
    ``worker.assembly.tags``). The track language goes in as three letters, the only form MP4 takes."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise FileNotFoundError("--m4b needs ffmpeg, which is not installed on this machine (apt-get install "
                                "ffmpeg); the chapter files were written and uploaded")
    listing = workdir / "chapters.txt"
    listing.write_text("".join(f"file '{workdir / Path(c.key).name}'\n" for c in chapters))
    marks, start = [], 0
    for chapter in chapters:
        end = start + round(chapter.duration_s * 1000)
        marks.append(ChapterMark(start, end, chapter_title(chapter.chapter, chapter.title)))
        start = end
    (workdir / "chapters.ffmeta").write_text(ffmetadata(m4b_tags(meta, fallback_title), marks), encoding="utf-8")
    language = iso639_2(meta.language) if meta.language else None
    subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i", str(listing), "-i",
                    str(workdir / "chapters.ffmeta"), "-map", "0:a:0", "-map_metadata", "1", "-map_chapters", "1",
                    *(["-metadata:s:a:0", f"language={language}"] if language else []), "-c:a", "aac",
                    "-b:a", bitrate, "-f", "ipod", str(output)], check=True)
    finish_m4b(output, meta, cover)


def new_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="f5-assemble-"))
