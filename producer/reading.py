"""Reading corpora as streams of paragraphs, whatever the format, without loading a whole file.

Every reader yields :class:`Paragraph` objects whose ``raw`` strings, concatenated, reproduce the book's body exactly
(after newline normalisation and with the Project Gutenberg header and licence footer removed). That is what lets the
round-trip test prove that no character is lost or repeated on the way to segments.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUPPORTED = (".txt", ".md", ".markdown", ".jsonl", ".epub")
_CHUNK = 1 << 16


class CorpusError(ValueError):
    """The corpus cannot be read as given; the message says why and what to try."""


@dataclass(frozen=True)
class Paragraph:
    raw: str  # exact source text, trailing blank lines included
    source_id: str | None = None  # dataset record id (.jsonl), epub document name
    chapter_hint: str | None = None  # a chapter break the format itself declares (epub documents, jsonl records)
    line: int | None = None  # where it starts in the file (1-based), for error messages

    @property
    def text(self) -> str:
        return " ".join(self.raw.split())


def _decoder(encoding: str) -> codecs.IncrementalDecoder:
    name = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return codecs.getincrementaldecoder(name)(errors="strict")
    except LookupError:
        raise CorpusError(f"unknown encoding {encoding!r}") from None


def decoded_lines(path: Path, encoding: str = "utf-8") -> Iterator[str]:
    """Lines with universal newlines, BOM removed; undecodable bytes are an error with the byte offset and a hint."""
    decoder = _decoder(encoding)
    offset, pending, held_cr = 0, "", ""
    with path.open("rb") as handle:
        while True:
            block = handle.read(_CHUNK)
            buffered = len(decoder.getstate()[0])
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                where = offset - buffered + exc.start
                raise CorpusError(
                    f"{path}: byte {where} (0x{exc.object[exc.start]:02x}) is not valid {encoding}. "
                    "If the file uses another encoding, pass it with --encoding (for example latin-1 or cp1252)."
                ) from None
            if "\x00" in text:
                raise CorpusError(f"{path}: contains NUL bytes near byte {offset}; this looks like a binary file, "
                                  "not text")
            offset += len(block)
            text, held_cr = held_cr + text, ""
            if block and text.endswith("\r"):  # a CRLF may be split across two reads
                text, held_cr = text[:-1], "\r"
            pending += text.replace("\r\n", "\n").replace("\r", "\n")
            *lines, pending = pending.split("\n")
            for line in lines:
                yield line + "\n"
            if not block:
                if pending:
                    yield pending
                return


def paragraphs_from_lines(lines: Iterator[str], first_line: int = 1) -> Iterator[Paragraph]:
    """Group lines into paragraphs: text lines followed by the blank lines after them."""
    current: list[str] = []
    seen_blank = False
    start = first_line
    for number, line in enumerate(lines, start=first_line):
        blank = not line.strip()
        if current and seen_blank and not blank:
            yield Paragraph("".join(current), line=start)
            current, seen_blank, start = [], False, number
        current.append(line)
        seen_blank = seen_blank or (blank and any(part.strip() for part in current))
    if current:
        yield Paragraph("".join(current), line=start)


def jsonl_paragraphs(path: Path, encoding: str) -> Iterator[Paragraph]:
    for number, line in enumerate(decoded_lines(path, encoding), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise CorpusError(f'{path}:{number}: each line must be an object with "id" and "text"')
        record_id = str(record.get("id", number))
        yield Paragraph(record["text"] + "\n", source_id=record_id, chapter_hint=None, line=number)


_TAGS = re.compile(r"<[^>]+>")
_BODY = re.compile(r"<body[^>]*>", re.IGNORECASE)
_BLOCK_END = re.compile(r"</(p|div|h[1-6]|li|blockquote|br)\s*>|<br\s*/?>", re.IGNORECASE)


def epub_paragraphs(path: Path) -> Iterator[Paragraph]:
    """Documents in spine order; each document starts a chapter; block elements become paragraphs."""
    import html
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ebooklib import ITEM_DOCUMENT, epub

        try:
            book = epub.read_epub(str(path), options={"ignore_ncx": True})
        except Exception as exc:
            raise CorpusError(f"{path}: not a readable EPUB ({exc})") from None
    for item_id, _linear in book.spine:
        item = book.get_item_with_id(item_id)
        if item is None or item.get_type() != ITEM_DOCUMENT:
            continue
        markup = item.get_content().decode("utf-8", errors="replace")
        body = _BODY.split(markup, maxsplit=1)[-1]
        text = html.unescape(_TAGS.sub("", _BLOCK_END.sub("\n\n", body)))
        first = True
        for paragraph in paragraphs_from_lines(iter(line + "\n" for line in text.split("\n"))):
            if not paragraph.raw.strip():
                continue
            yield Paragraph(paragraph.raw, source_id=item.get_name(), chapter_hint=item.get_name() if first else None)
            first = False


def read_paragraphs(path: Path, encoding: str = "utf-8") -> Iterator[Paragraph]:
    """The corpus as a stream of paragraphs, chosen by file extension."""
    if not path.exists():
        raise CorpusError(f"{path}: no such file")
    if not path.is_file():
        raise CorpusError(f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise CorpusError(f"{path}: unsupported file type {suffix or '(none)'}; use one of {', '.join(SUPPORTED)}")
    if suffix == ".jsonl":
        return jsonl_paragraphs(path, encoding)
    if suffix == ".epub":
        return epub_paragraphs(path)
    return paragraphs_from_lines(decoded_lines(path, encoding))
