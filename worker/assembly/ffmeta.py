"""FFMETADATA, the text file through which ffmpeg takes a file's tags and chapter marks (``-i x.ffmeta -map_metadata``).

Its rules (ffmpeg-formats, "Metadata"): ``key=value`` lines, ``[CHAPTER]`` sections, lines that begin with ``;`` or
``#`` are comments, and ``=``, ``;``, ``#``, ``\\`` and a newline inside a key or a value must be escaped with a
backslash. Titles come from books, so they carry all of these: "Capítulo 3; en el que…", "1 = 1", "#MeToo", a heading
over two lines. Unescaped, a ``;`` or ``#`` after a newline starts a comment and the rest of the title is lost, and a
newline ends the value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_SPECIAL = frozenset("=;#\\\n")


def escape(text: str) -> str:
    """``text`` as an FFMETADATA key or value. A NUL would end ffmpeg's line early, so it is dropped."""
    return "".join("\\" + char if char in _SPECIAL else char for char in text.replace("\x00", ""))


@dataclass(frozen=True)
class ChapterMark:
    start_ms: int
    end_ms: int
    title: str


def ffmetadata(tags: Mapping[str, str], chapters: Iterable[ChapterMark] = ()) -> str:
    """The FFMETADATA1 text of the file's global ``tags`` (empty values left out) and its chapter marks."""
    lines = [";FFMETADATA1", *(f"{escape(key)}={escape(value)}" for key, value in tags.items() if value)]
    for mark in chapters:
        lines += ["[CHAPTER]", "TIMEBASE=1/1000", f"START={mark.start_ms}", f"END={mark.end_ms}",
                  f"title={escape(mark.title)}"]
    return "\n".join(lines) + "\n"
