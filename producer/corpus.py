"""From a corpus file to a stream of segments: body, chapters, paragraphs, voices, segments, normalised text.

Streaming end to end: only a bounded look-ahead of paragraphs is held (to decide the language and whether the opening
text is front matter before a first chapter heading), so a 100 MB corpus runs in flat memory.

Each paragraph is read as a script first (``producer.script``): voice tags, dialogue and pause markers cut it into runs
of one voice; each run is then cut into segments within that voice's limit. A segment never spans two voices. The
spoken text of a segment is its raw text without markup, through the book's lexicon, then normalised; its raw text
keeps everything, so the book still round-trips exactly.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from producer.lexicon import Lexicon
from producer.normalize import detect_language, normalize
from producer.reading import Paragraph, decoded_lines, paragraphs_from_lines, read_paragraphs
from producer.script import Cast, Run, ScriptReader, is_scene_break, without_dialogue_dashes
from producer.segmenter import split_paragraph
from worker.speech import utf8_len

# Project Gutenberg frames, as Gutenberg has written them over the years (leading whitespace allowed everywhere):
#   header ends:  "*** START OF THE PROJECT GUTENBERG EBOOK X ***"  (since ~2020; "THIS" before; "***START" in some)
#                 "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.02/11/02*END*"  (the 1990s header)
#   footer starts: "*** END OF THE PROJECT GUTENBERG EBOOK X ***"  ("THIS" before ~2020)
#                 "End of the Project Gutenberg EBook of X, by Y", "End of Project Gutenberg's X, by Y",
#                 "End of The Project Gutenberg Etext of X"  (older files put this line before the *** one)
_GUTENBERG_START = re.compile(
    r"^\s*(\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG|\*END\*?\s*THE SMALL PRINT)", re.IGNORECASE)
_GUTENBERG_END = re.compile(
    r"^\s*(\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG|END OF (THE |THIS )?PROJECT GUTENBERG)", re.IGNORECASE)
HEADER_SCAN_LINES = 1000
LOOKAHEAD_PARAGRAPHS = 2_000
SCENE_PAUSE_S = 2.0

DEFAULT_HEADINGS = [
    r"(cap[íi]tulo|chapter)\s+([ivxlcdm]+|\d+|[a-záéíóúñ]+)\b",
    r"#{1,6}\s+\S",
    r"[IVXLCDM]+\.?\s*$",
]
MAX_HEADING_CHARS = 300


@dataclass(frozen=True)
class Segment:
    chapter: int  # 0: front matter before the first heading; 1..n: chapters
    index: int  # 1-based position inside the chapter
    raw: str  # exact source text (whitespace included)
    text: str  # normalised text to speak
    heading: bool  # part of a chapter title
    paragraph_end: bool  # last segment of its paragraph
    chapter_title: str
    source_id: str | None = None
    voice: str = ""  # the cast's name for the voice that speaks it ("" when the book has one voice, unnamed)
    pause_after_s: float | None = None  # asked-for silence after it ([pause], a scene break), instead of the usual


def without_gutenberg_frame(lines: Iterable[str]) -> tuple[int, Iterator[str]]:
    """Drop a Project Gutenberg header (up to its START line) and licence footer (from its END line); also the file's
    line number of the first line kept."""
    lines = iter(lines)
    head = list(itertools.islice(lines, HEADER_SCAN_LINES))
    start = next((i for i, line in enumerate(head) if _GUTENBERG_START.match(line)), None)

    def body() -> Iterator[str]:
        for line in itertools.chain(head[start + 1 :] if start is not None else head, lines):
            if _GUTENBERG_END.match(line):
                return
            yield line

    return (start + 2 if start is not None else 1), body()


def body_paragraphs(path: Path, encoding: str) -> Iterator[Paragraph]:
    if path.suffix.lower() in (".txt", ".md", ".markdown"):
        if not path.exists() or not path.is_file():
            yield from read_paragraphs(path, encoding)  # raises the clear error
            return
        first_line, lines = without_gutenberg_frame(decoded_lines(path, encoding))
        yield from paragraphs_from_lines(lines, first_line)
    else:
        yield from read_paragraphs(path, encoding)


class HeadingRule:
    def __init__(self, custom: str | None = None) -> None:
        patterns = [custom] if custom else DEFAULT_HEADINGS
        self.patterns = [re.compile(p if p.startswith("^") else "^" + p, re.IGNORECASE if not custom else 0)
                         for p in patterns]

    def __call__(self, paragraph: Paragraph) -> bool:
        text = paragraph.raw.strip()
        if not text or len(text) > MAX_HEADING_CHARS or text.count("\n") > 2:
            return False
        return paragraph.chapter_hint is not None or any(p.match(text) for p in self.patterns)


class SpokenText:
    """What a voice says of raw text: markup gone, dialogue dashes unread, the lexicon applied, then normalised."""

    def __init__(self, lang: str, lexicon: Lexicon | None) -> None:
        self.lang = lang
        self.lexicon = lexicon

    def __call__(self, raw: str, heading: bool, dashed: bool = False) -> str:
        text = without_dialogue_dashes(raw) if dashed else raw
        if self.lexicon:
            text = self.lexicon.apply(text)
        return normalize(" ".join(text.split()), self.lang, heading=heading)


class _Segmenting:
    """The state of one pass over a book: chapter and index, and the segment held back (so that text with nothing
    to speak, or a pause, can still join it)."""

    def __init__(self, path: Path, limit_for: Callable[[str], int], spoken: SpokenText, cast: Cast | None,
                 scene_pause_s: float, chapter: int) -> None:
        self.path = path
        self.limit_for = limit_for
        self.spoken = spoken
        self.scene_pause_s = scene_pause_s
        cast = cast if cast is not None else Cast("")  # one unnamed voice: still [pause] markers
        self.reader = ScriptReader(cast)
        # headings are read in the narrator's voice, never cut into dialogue
        self.heading_reader = ScriptReader(replace(cast, dialogue=None))
        self.chapter, self.index, self.title = chapter, 0, ""
        self.pending: Segment | None = None
        self.leading = ""  # raw text seen before the first speakable segment

    def absorb(self, raw: str, pause: float | None) -> None:
        """Text with nothing to speak joins a neighbour (the round trip stays exact); a pause goes to the segment
        before it."""
        if self.pending is None:
            self.leading += raw
            return
        seconds = self.pending.pause_after_s
        if pause is not None:
            seconds = pause if seconds is None else max(seconds, pause)
        self.pending = replace(self.pending, raw=self.pending.raw + raw, pause_after_s=seconds)

    def _emit(self, segment: Segment) -> Iterator[Segment]:
        self.leading = ""
        if self.pending is not None:
            yield self.pending
        self.pending = segment

    def paragraph(self, paragraph: Paragraph, heading: bool) -> Iterator[Segment]:
        if heading:
            self.chapter, self.index, self.title = self.chapter + 1, 0, paragraph.text
        if not heading and is_scene_break(paragraph.raw):
            self.absorb(paragraph.raw, self.scene_pause_s)
            return
        where = f"{self.path}:{paragraph.line}" if paragraph.line else f"{self.path} ({paragraph.source_id})"
        runs = (self.heading_reader if heading else self.reader).runs(paragraph.raw, where)
        spoken_runs = [i for i, run in enumerate(runs)
                       if run.speakable and self.spoken(run.spoken, heading, run.dashed)]
        for number, run in enumerate(runs):
            if number not in spoken_runs:
                self.absorb(run.raw, run.pause_after_s)
                continue
            yield from self._run(run, paragraph, heading, last_run=number == spoken_runs[-1])

    def _run(self, run: Run, paragraph: Paragraph, heading: bool, last_run: bool) -> Iterator[Segment]:
        offset = run.raw.find(run.spoken)
        prefix, suffix = run.raw[:offset], run.raw[offset + len(run.spoken) :]  # markup around the spoken text
        pieces = split_paragraph(run.spoken, self.limit_for(run.voice), lambda raw: utf8_len(
            self.spoken(raw, heading, run.dashed)))
        for number, piece in enumerate(pieces):
            raw = (prefix if number == 0 else "") + piece + (suffix if number == len(pieces) - 1 else "")
            text = self.spoken(piece, heading, run.dashed)
            if not text:
                self.absorb(raw, None)
                continue
            last = number == len(pieces) - 1
            self.index += 1
            yield from self._emit(Segment(self.chapter, self.index, self.leading + raw, text, heading,
                                          last and last_run, self.title, paragraph.source_id, run.voice,
                                          run.pause_after_s if last else None))


def segments(path: Path, limit: int | Callable[[str], int], lang: str = "auto", encoding: str = "utf-8",
             chapter_regex: str | None = None, cast: Cast | None = None, lexicon: Lexicon | None = None,
             scene_pause_s: float = SCENE_PAUSE_S) -> Iterator[Segment]:
    """All segments of a corpus, in reading order. ``limit``: the segment limit, or the limit for a voice by name;
    ``cast``: how voices are chosen (tags, dialogue); ``lexicon``: applied before normalisation."""
    stream = body_paragraphs(path, encoding)
    ahead = list(itertools.islice(stream, LOOKAHEAD_PARAGRAPHS))
    if lang == "auto":
        lang = detect_language(" ".join(p.raw for p in ahead[:400]))
    is_heading = HeadingRule(chapter_regex)
    has_early_heading = any(is_heading(p) for p in ahead)
    limit_for = limit if callable(limit) else (lambda _voice: limit)
    state = _Segmenting(path, limit_for, SpokenText(lang, lexicon), cast, scene_pause_s,
                        0 if has_early_heading else 1)
    for paragraph in itertools.chain(ahead, stream):
        yield from state.paragraph(paragraph, is_heading(paragraph))
    if state.pending is not None:
        yield state.pending
