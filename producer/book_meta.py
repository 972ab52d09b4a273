"""A book's metadata from its EPUB, for the audiobook files: title, authors, narrators, year, language, description
and the cover image, read at ``enqueue`` (where the EPUB is) and kept for ``assemble`` (which may run elsewhere): the
metadata in the book record, the cover in storage beside the chapters.

The OPF package document says it all (Dublin Core elements, and the cover in one of three ways that EPUBs in the
wild use); ebooklib parses it. Metadata is never worth failing an enqueue for: an EPUB whose metadata cannot be read
gives what could be read, with a warning.
"""

from __future__ import annotations

import html
import logging
import re
import warnings
from pathlib import Path
from typing import Any

from worker.books.manifest import book_dir_key
from worker.books.meta import BookMeta, cover_type
from worker.storage import Storage

log = logging.getLogger(__name__)

_OPF_ROLE = "{http://www.idpf.org/2007/opf}role"
_TAGS = re.compile(r"<[^>]+>")
_YEAR = re.compile(r"\b(\d{4})\b")
AUTHOR_ROLES = {"aut", ""}  # MARC relator codes; a creator without a role is the author (EPUB 2 and 3 both say so)
NARRATOR_ROLES = {"nrt"}


def read_epub_meta(path: Path) -> tuple[BookMeta, bytes | None]:
    """The EPUB's metadata, and its cover image's bytes (None without a JPEG or PNG cover)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ebooklib warns about its own future defaults on every read
        from ebooklib import epub

        book = epub.read_epub(str(path), options={"ignore_ncx": True})
    roles = _refined_roles(book)
    authors, narrators = [], []
    for element in ("creator", "contributor"):
        for name, attrs in book.get_metadata("DC", element):
            role = (attrs.get(_OPF_ROLE) or roles.get(attrs.get("id", ""), "")).strip().lower()
            if element == "creator" and role in AUTHOR_ROLES:
                authors.append(_clean(name))
            elif role in NARRATOR_ROLES:
                narrators.append(_clean(name))
    meta = BookMeta(title=_first(book, "title"), authors=[a for a in authors if a],
                    narrators=[n for n in narrators if n], year=_year(book), language=_first(book, "language"),
                    description=_first(book, "description"))
    return meta, _cover_bytes(book)


def stored_book_meta(corpus: Path, storage: Storage, prefix: str, book: str) -> BookMeta:
    """What ``enqueue`` records of a corpus: an EPUB's metadata, its cover uploaded as ``{book dir}/cover.jpg|png``;
    empty metadata for any other corpus."""
    if corpus.suffix.lower() != ".epub":
        return BookMeta()
    try:
        meta, cover = read_epub_meta(corpus)
    except Exception as exc:  # a metadata problem must not stop the book: its text was read already
        log.warning("%s: cannot read the EPUB's metadata (%s); the audiobook files will carry none", corpus, exc)
        return BookMeta()
    kind = cover_type(cover) if cover else None
    if cover and kind:
        key = f"{book_dir_key(prefix, book)}/cover.{kind[1]}"
        storage.put(key, cover, content_type=kind[0])
        meta.cover_key = key
    return meta


def _first(book: Any, name: str) -> str:
    values = [_clean(value) for value, _ in book.get_metadata("DC", name) if value]
    return next((v for v in values if v), "")


def _clean(text: str | None) -> str:
    """Metadata text as one plain line: descriptions often carry (escaped) HTML, names stray whitespace."""
    return " ".join(html.unescape(_TAGS.sub(" ", text or "")).split())


def _year(book: Any) -> int | None:
    """The publication year: from a date marked as the publication (EPUB 2's opf:event), else the first date."""
    dates = book.get_metadata("DC", "date")
    published = [v for v, attrs in dates if attrs.get("{http://www.idpf.org/2007/opf}event") == "publication"]
    for value in published + [v for v, _ in dates]:
        found = _YEAR.search(value or "")
        if found:
            return int(found.group(1))
    return None


def _refined_roles(book: Any) -> dict[str, str]:
    """EPUB 3 gives a creator's role in a separate ``<meta refines="#id" property="role">``: id → role."""
    roles = {}
    for value, attrs in book.get_metadata("OPF", "meta"):
        if attrs.get("property") == "role" and attrs.get("refines", "").startswith("#") and value:
            roles[attrs["refines"][1:]] = value
    return roles


def _cover_bytes(book: Any) -> bytes | None:
    """The cover image: the item marked ``cover-image`` (EPUB 3), the one ``<meta name="cover">`` names (EPUB 2), or
    an image whose id or file name says cover; the first of these that is a JPEG or PNG."""
    from ebooklib import ITEM_COVER, ITEM_IMAGE

    candidates = list(book.get_items_of_type(ITEM_COVER))
    for _, attrs in book.get_metadata("OPF", "meta"):
        if attrs.get("name") == "cover" and attrs.get("content"):
            candidates.append(book.get_item_with_id(attrs["content"]))
    images = [*book.get_items_of_type(ITEM_IMAGE), *book.get_items_of_type(ITEM_COVER)]
    candidates += [i for i in images if "cover" in (i.get_id() or "").lower() or "cover" in i.get_name().lower()]
    for item in candidates:
        data: bytes | None = item.get_content() if item is not None else None
        if data and cover_type(data):
            return data
    return None
