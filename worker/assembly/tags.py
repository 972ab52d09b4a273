"""Tags in the audiobook's files, written with mutagen: ID3 in MP3 chapters, Vorbis comments in FLAC, Ogg Vorbis and
Ogg Opus chapters (WAV stays untagged: its INFO chunk is read by almost nothing), and the MP4 atoms of the .m4b that
ffmpeg's muxer cannot write.

Where the narrator goes, and why. No tag format has a narrator field that everyone reads, so it is written where the
readers that matter look:

- **composer** (ID3 TCOM, Vorbis COMPOSER, MP4 ©wrt): Audiobookshelf's documented mapping (Composer → Narrator), and
  what Plex, Prologue and most taggers (Mp3tag's audiobook sources, m4b-tool's ``--writer``) use;
- **©nrt** in the .m4b: Audible's own narrator atom, read by tone/ATL-based tools and Audible-style players;
- a field called **NARRATOR** (ID3 ``TXXX:NARRATOR``, Vorbis NARRATOR, MP4 ``----:com.apple.iTunes:NARRATOR``), which
  says what it is to a person and to ffprobe (``NARRATOR`` in its output), whatever a player does with composer.

The author goes to artist and album artist, the book's title to album (and to title in the .m4b), the chapter's title
to title; genre is "Audiobook", and the .m4b is marked as one (``stik`` 2) for Apple's players.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from worker.books.meta import BookMeta, cover_type

if TYPE_CHECKING:
    from mutagen.flac import Picture
    from mutagen.id3 import Frame

log = logging.getLogger(__name__)

GENRE = "Audiobook"
AUDIOBOOK_MEDIA_TYPE = "2"  # MP4 ``stik``: 2 is "Audiobook"

# ISO 639-1 → ISO 639-2/T: MP4's track language (mdhd) and ID3's TLAN take three letters, EPUBs give BCP 47 ("es-ES").
_ISO639_2 = {
    "ar": "ara", "bg": "bul", "bn": "ben", "ca": "cat", "cs": "ces", "cy": "cym", "da": "dan", "de": "deu",
    "el": "ell", "en": "eng", "eo": "epo", "es": "spa", "et": "est", "eu": "eus", "fa": "fas", "fi": "fin",
    "fr": "fra", "ga": "gle", "gl": "glg", "he": "heb", "hi": "hin", "hr": "hrv", "hu": "hun", "id": "ind",
    "is": "isl", "it": "ita", "ja": "jpn", "ko": "kor", "la": "lat", "lt": "lit", "lv": "lav", "ms": "msa",
    "nb": "nob", "nl": "nld", "nn": "nno", "no": "nor", "pl": "pol", "pt": "por", "ro": "ron", "ru": "rus",
    "sk": "slk", "sl": "slv", "sr": "srp", "sv": "swe", "sw": "swa", "ta": "tam", "th": "tha", "tr": "tur",
    "uk": "ukr", "ur": "urd", "vi": "vie", "zh": "zho",
}


@dataclass(frozen=True)
class Cover:
    data: bytes
    mime: str
    extension: str

    @classmethod
    def from_bytes(cls, data: bytes) -> Cover | None:
        """A cover from image bytes, or None when they are neither JPEG nor PNG (which the tag formats take)."""
        kind = cover_type(data)
        return cls(data, *kind) if kind else None


@dataclass(frozen=True)
class Track:
    """Where a chapter file sits in the book: its place among the book's chapters (1-based) and its title."""

    number: int
    total: int
    title: str


def chapter_title(number: int, title: str) -> str:
    """A chapter's title, or "Chapter N" for a chapter without a heading (players show something either way)."""
    return title or f"Chapter {number}"


def iso639_2(language: str) -> str | None:
    """The three-letter ISO 639-2 code of a BCP 47 tag ("es-ES" → "spa"); None when it is not known."""
    primary = language.strip().lower().replace("_", "-").split("-")[0]
    if len(primary) == 3 and primary.isalpha():
        return primary
    return _ISO639_2.get(primary)


def tag_chapter_file(path: Path, fmt: str, track: Track, meta: BookMeta, cover: Cover | None) -> None:
    """Write the chapter's and the book's tags into the file at ``path`` (any tags already there are replaced)."""
    if fmt == "mp3":
        _write_id3(path, track, meta, cover)
    elif fmt == "flac":
        _write_flac(path, track, meta, cover)
    elif fmt in ("ogg", "opus"):
        _write_ogg(path, fmt, track, meta, cover)


def vorbis_comments(track: Track, meta: BookMeta) -> dict[str, str]:
    """The Vorbis comments of a chapter file (field names after the Xiph recommendations and common practice)."""
    fields = {"TITLE": track.title, "ALBUM": meta.title, "ARTIST": meta.author, "ALBUMARTIST": meta.author,
              "COMPOSER": meta.narrator, "NARRATOR": meta.narrator, "TRACKNUMBER": str(track.number),
              "TRACKTOTAL": str(track.total), "DATE": str(meta.year) if meta.year is not None else "",
              "LANGUAGE": meta.language, "DESCRIPTION": meta.description, "GENRE": GENRE}
    return {key: value for key, value in fields.items() if value}


def _picture(cover: Cover) -> Picture:
    from mutagen.flac import Picture

    picture = Picture()
    picture.type, picture.mime, picture.desc, picture.data = 3, cover.mime, "Cover", cover.data  # 3: front cover
    return picture


def _write_flac(path: Path, track: Track, meta: BookMeta, cover: Cover | None) -> None:
    from mutagen.flac import FLAC

    audio = FLAC(path)
    audio.delete()
    audio.clear_pictures()
    for key, value in vorbis_comments(track, meta).items():
        audio[key] = value
    if cover is not None:
        audio.add_picture(_picture(cover))
    audio.save()


def _write_ogg(path: Path, fmt: str, track: Track, meta: BookMeta, cover: Cover | None) -> None:
    from mutagen.oggopus import OggOpus
    from mutagen.oggvorbis import OggVorbis

    audio = OggOpus(path) if fmt == "opus" else OggVorbis(path)
    audio.delete()
    for key, value in vorbis_comments(track, meta).items():
        audio[key] = value
    if cover is not None:  # Ogg has no picture block: the FLAC one, base64, in a comment (Xiph's convention)
        audio["METADATA_BLOCK_PICTURE"] = base64.b64encode(_picture(cover).write()).decode("ascii")
    audio.save()


def _write_id3(path: Path, track: Track, meta: BookMeta, cover: Cover | None) -> None:
    from mutagen.id3 import APIC, COMM, ID3, TALB, TCOM, TCON, TDRC, TIT2, TLAN, TPE1, TPE2, TRCK, TXXX

    tags = ID3()  # a fresh tag: whatever the encoder wrote is replaced
    language = iso639_2(meta.language) if meta.language else None
    frames: list[Frame] = [TIT2(encoding=3, text=track.title), TRCK(encoding=3, text=f"{track.number}/{track.total}"),
              TCON(encoding=3, text=GENRE)]
    if meta.title:
        frames.append(TALB(encoding=3, text=meta.title))
    if meta.author:
        frames += [TPE1(encoding=3, text=meta.author), TPE2(encoding=3, text=meta.author)]
    if meta.narrator:
        frames += [TCOM(encoding=3, text=meta.narrator), TXXX(encoding=3, desc="NARRATOR", text=meta.narrator)]
    if meta.year is not None:
        frames.append(TDRC(encoding=3, text=str(meta.year)))
    if language:
        frames.append(TLAN(encoding=3, text=language))
    if meta.description:
        frames.append(COMM(encoding=3, lang=language or "und", desc="", text=meta.description))
    if cover is not None:
        frames.append(APIC(encoding=3, mime=cover.mime, type=3, desc="Cover", data=cover.data))
    for frame in frames:
        tags.add(frame)
    tags.save(path, v2_version=3)  # ID3v2.3: what Windows, car stereos and older players still read best


def m4b_tags(meta: BookMeta, fallback_title: str) -> dict[str, str]:
    """The .m4b's global tags under ffmpeg's names, which its MP4 muxer turns into iTunes atoms."""
    title = meta.title or fallback_title
    return {"title": title, "album": title, "artist": meta.author, "album_artist": meta.author,
            "composer": meta.narrator, "date": str(meta.year) if meta.year is not None else "",
            "description": meta.description, "comment": meta.description, "genre": GENRE,
            "media_type": AUDIOBOOK_MEDIA_TYPE}


def finish_m4b(path: Path, meta: BookMeta, cover: Cover | None) -> None:
    """What ffmpeg's MP4 muxer cannot write, added with mutagen: the cover (``covr``, which players and ffprobe show as
    an attached picture), Audible's narrator atom, and NARRATOR and LANGUAGE as iTunes free-form atoms."""
    from mutagen.mp4 import MP4, MP4Cover, MP4FreeForm

    audio = MP4(path)  # setting an atom adds the tags when the file has none
    if cover is not None:
        kind = MP4Cover.FORMAT_PNG if cover.mime == "image/png" else MP4Cover.FORMAT_JPEG
        audio["covr"] = [MP4Cover(cover.data, imageformat=kind)]
    if meta.narrator:
        audio["©nrt"] = [meta.narrator]
        audio["----:com.apple.iTunes:NARRATOR"] = [MP4FreeForm(meta.narrator.encode("utf-8"))]
    if meta.language:
        audio["----:com.apple.iTunes:LANGUAGE"] = [MP4FreeForm(meta.language.encode("utf-8"))]
    audio.save()
