"""The .m4b's file name: ``Author - Title.m4b``, the way audiobook libraries (Audiobookshelf, Plex, Apple Books
imports) and their users name books, made safe for every file system it may be copied to and for storage keys.
"""

from __future__ import annotations

import re
import unicodedata

from worker.books.meta import BookMeta

MAX_NAME_BYTES = 200  # of UTF-8, before the extension: file systems take 255, and there may be a "(1)" added later
# Separators between parts of a title become " - "; characters Windows, macOS or S3 keys refuse are dropped.
_SEPARATORS = re.compile(r"\s*[:/\\|]+\s*")
_DROPPED = re.compile(r'[<>"?*%]')
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)  # Windows device names


def safe_file_name(text: str) -> str:
    """``text`` as a portable file name: NFC, one line, no path separators or reserved characters, no leading or
    trailing dots or spaces (Windows drops them), not a Windows device name, at most ``MAX_NAME_BYTES``; "" when
    nothing is left."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if unicodedata.category(char)[0] == "C" else char for char in text)
    text = _DROPPED.sub("", _SEPARATORS.sub(" - ", text))
    text = " ".join(text.split()).strip(" .-")
    while len(text.encode("utf-8")) > MAX_NAME_BYTES:
        text = text[:-1].rstrip(" .-")
    return f"{text}_" if _RESERVED.match(text) else text


def audiobook_file_name(meta: BookMeta, book: str) -> str:
    """``Author - Title.m4b``; ``Title.m4b`` without an author; ``<book id>.m4b`` without a title."""
    title, author = safe_file_name(meta.title), safe_file_name(meta.author)
    if not title:
        return f"{book}.m4b"
    name = f"{author} - {title}" if author else title
    return f"{safe_file_name(name) or book}.m4b"
