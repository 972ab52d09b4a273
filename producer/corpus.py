"""From a corpus file to a stream of segments: body, chapters, paragraphs, segments, normalised text.

Streaming end to end: only a bounded look-ahead of paragraphs is held (to decide the language and whether the opening
text is front matter before a first chapter heading), so a 100 MB corpus runs in flat memory.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from producer.normalize import detect_language, normalize
from producer.reading import Paragraph, decoded_lines, paragraphs_from_lines, read_paragraphs
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


def without_gutenberg_frame(lines: Iterable[str]) -> Iterator[str]:
    """Drop a Project Gutenberg header (up to its START line) and licence footer (from its END line)."""
    lines = iter(lines)
    head = list(itertools.islice(lines, HEADER_SCAN_LINES))
    start = next((i for i, line in enumerate(head) if _GUTENBERG_START.match(line)), None)
    for line in itertools.chain(head[start + 1 :] if start is not None else head, lines):
        if _GUTENBERG_END.match(line):
            return
        yield line


def body_paragraphs(path: Path, encoding: str) -> Iterator[Paragraph]:
    if path.suffix.lower() in (".txt", ".md", ".markdown"):
        if not path.exists() or not path.is_file():
            yield from read_paragraphs(path, encoding)  # raises the clear error
            return
        yield from paragraphs_from_lines(without_gutenberg_frame(decoded_lines(path, encoding)))
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


def segments(path: Path, limit: int, lang: str = "auto", encoding: str = "utf-8",
             chapter_regex: str | None = None) -> Iterator[Segment]:
    """All segments of a corpus, in reading order."""
    stream = body_paragraphs(path, encoding)
    ahead = list(itertools.islice(stream, LOOKAHEAD_PARAGRAPHS))
    if lang == "auto":
        lang = detect_language(" ".join(p.raw for p in ahead[:400]))
    is_heading = HeadingRule(chapter_regex)
    has_early_heading = any(is_heading(p) for p in ahead)
    chapter, index, title = (0 if has_early_heading else 1), 0, ""

    def measure_for(heading: bool):
        return lambda raw: utf8_len(normalize(" ".join(raw.split()), lang, heading=heading))

    pending: Segment | None = None  # held back one step so that whitespace-only text can join it
    leading = ""  # whitespace seen before the first speakable segment
    for paragraph in itertools.chain(ahead, stream):
        heading = is_heading(paragraph)
        if heading:
            chapter, index, title = chapter + 1, 0, paragraph.text
        pieces = split_paragraph(paragraph.raw, limit, measure_for(heading)) if paragraph.raw.strip() \
            else [paragraph.raw]
        for number, raw in enumerate(pieces):
            text = normalize(" ".join(raw.split()), lang, heading=heading)
            if not text:  # nothing to speak: the whitespace joins a neighbour so the round trip stays exact
                if pending is None:
                    leading += raw
                else:
                    pending = replace(pending, raw=pending.raw + raw)
                continue
            index += 1
            segment = Segment(chapter, index, leading + raw, text, heading, number == len(pieces) - 1, title,
                              paragraph.source_id)
            leading = ""
            if pending is not None:
                yield pending
            pending = segment
    if pending is not None:
        yield pending
