"""What an audiobook file says about its book: title, authors, narrators, year, language, description and cover.

Kept in the book record (``BookRecord.meta``) because the corpus is read at ``enqueue`` and the files are made at
``assemble``, maybe on another machine that has no copy of the EPUB: the record and the cover image in storage are
all that travels. Torch-free and shared, like the rest of ``worker.books``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# Magic bytes of the cover formats every tag format and player takes (MP4 ``covr``, ID3 APIC, FLAC PICTURE).
_COVER_TYPES = {b"\xff\xd8\xff": ("image/jpeg", "jpg"), b"\x89PNG\r\n\x1a\n": ("image/png", "png")}


class BookMeta(BaseModel):
    """The book's own metadata, as its EPUB or the producer's flags give it; empty fields are left out of the tags."""

    model_config = ConfigDict(extra="allow")  # a record written by a later version stays readable

    title: str = ""
    authors: list[str] = Field(default_factory=list)
    narrators: list[str] = Field(default_factory=list)
    year: int | None = Field(None, ge=0, le=9999)
    language: str = ""  # a BCP 47 tag as the EPUB has it ("es", "en-GB")
    description: str = ""
    cover_key: str = ""  # storage key of the cover image ({book dir}/cover.jpg|png); "" without one

    @property
    def author(self) -> str:
        """The authors as one credit line, the way players show a single artist field."""
        return ", ".join(self.authors)

    @property
    def narrator(self) -> str:
        return ", ".join(self.narrators)

    def overridden(self, *, title: str | None = None, author: str | None = None, narrator: str | None = None,
                   year: int | None = None, language: str | None = None,
                   description: str | None = None) -> BookMeta:
        """This metadata with the values the caller gave (command-line flags) in place of the EPUB's."""
        update: dict[str, object] = {name: value for name, value in (
            ("title", title), ("year", year), ("language", language), ("description", description))
            if value is not None}
        if author is not None:
            update["authors"] = [author] if author else []
        if narrator is not None:
            update["narrators"] = [narrator] if narrator else []
        return self.model_copy(update=update)


def cover_type(data: bytes) -> tuple[str, str] | None:
    """(MIME type, file extension) of a JPEG or PNG image, from its first bytes; None for anything else.

    The bytes decide, not a file name or an EPUB's declared media type, which are sometimes wrong."""
    return next((kind for magic, kind in _COVER_TYPES.items() if data.startswith(magic)), None)
