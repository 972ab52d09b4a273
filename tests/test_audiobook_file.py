"""The audiobook file: a real EPUB made by pandoc (three chapters, a cover, title, authors, a narrator, language, date
and description), its metadata read the way ``enqueue`` reads it and kept in the book record and storage; then the real
``f5-batch assemble`` writes MP3/FLAC/Ogg chapter files with tags and one .m4b named after the book, read back with
ffprobe and mutagen.

What runs for real: pandoc, the producer's corpus reading (EPUB → segments → manifest entries through ``BookJobs``,
as enqueue makes them), ``stored_book_meta`` (the call enqueue makes), the console script, ffmpeg, ffprobe, mutagen.
What does not: the broker and the worker. The segments' audio is a tone written straight into the storage folder
(as ``tests/test_assemble.py``'s long-chapter test does), because what is measured here is what assembly does with
metadata, not speech.

One chapter title carries ``;``, ``=``, ``#``, ``\\`` and a newline. ``;``, ``=`` and ``#`` come through the real
path (a Markdown heading → EPUB → the manifest's ``chapter_title``). A newline cannot: the reader joins a heading's
lines with spaces (``Paragraph.text``), so that title is set in the manifest entries directly, which is where any
other producer of manifests could put one.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import cli

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(any(shutil.which(tool) is None for tool in ("ffmpeg", "ffprobe", "pandoc")),
                       reason="needs ffmpeg, ffprobe and pandoc (apt-get install ffmpeg pandoc)"),
]

BOOK = "libro"
TITLE = "El libro: uno/dos"
AUTHORS = ["Ana Autora", "Bruno Segundo"]
NARRATOR = "Nico Narrador"
DESCRIPTION = "Una descripción corta; con = y #, para ver que nada se pierde."
HEADING_1 = "Capítulo 1; uno = dos #3"  # through pandoc, the EPUB and the reader
NEWLINE_TITLE = "Capítulo 2;\nsegunda línea = #4 \\ fin"  # set in the manifest (see the module's docstring)

MARKDOWN = f"""# {HEADING_1}

Era una vez un libro pequeño. Tenía tres capítulos y una portada.

Un segundo párrafo, para que haya pausas.

# Capítulo 2

Aquí pasa algo.

# Capítulo 3: el final

Y aquí termina.
"""

CREATORS = """---
creator:
  - role: author
    text: Ana Autora
  - role: author
    text: Bruno Segundo
  - role: nrt
    text: Nico Narrador
...
"""


def png(rgb: tuple[int, int, int], size: int = 8) -> bytes:
    """A tiny solid PNG, from its definition (signature, IHDR, IDAT, IEND), with no imaging library."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def tone(seconds: float) -> bytes:
    samples = (0.2 * np.sin(2 * np.pi * 220 * np.arange(round(seconds * 24000)) / 24000)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, samples, 24000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def ffprobe(path: Path) -> dict:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_format", "-show_streams", "-show_chapters", "-of", "json",
                           str(path)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """The EPUB's book, as enqueue leaves it in storage (record with metadata, cover, manifest) and its segments'
    audio. Nothing is kept in the local manifest folder: ``assemble`` reads it all from storage, as on another
    machine. Returns (env, store folder, empty manifest folder, epub path, manifest entries)."""
    from producer import corpus
    from producer.book_meta import stored_book_meta
    from producer.jobs import BookJobs, book_record
    from worker.books.manifest import book_dir_key, entry_line
    from worker.constants import TASK_SYNTHESIZE
    from worker.contract import JobParams, VoiceSpec
    from worker.storage.local import LocalStorage

    work = tmp_path_factory.mktemp("audiobook")
    (work / "book.md").write_text(MARKDOWN, encoding="utf-8")
    (work / "creators.yaml").write_text(CREATORS, encoding="utf-8")
    (work / "cover.png").write_bytes(png((200, 30, 30)))
    epub = work / "libro.epub"
    subprocess.run(["pandoc", str(work / "book.md"), str(work / "creators.yaml"), "-o", str(epub),
                    f"--epub-cover-image={work / 'cover.png'}", "--metadata", f"title={TITLE}", "--metadata",
                    "lang=es-ES", "--metadata", "date=2021-03-04", "--metadata", f"description={DESCRIPTION}"],
                   check=True)
    storage = LocalStorage(work / "store")
    record = book_record(BOOK, "books", VoiceSpec(ref_audio="voices/none.wav", ref_text="hola"), JobParams(), "es",
                         200, 1, None, epub)
    record.meta = stored_book_meta(epub, storage, record.prefix, record.book)  # as enqueue does
    jobs = BookJobs(record, None)
    entries = []
    for segment in corpus.segments(epub, 200, "es"):
        job = jobs.segment_job(segment)
        entry = jobs.entry(segment, job, TASK_SYNTHESIZE, f"task-{segment.chapter}-{segment.index}")
        if segment.chapter_title == "Capítulo 2":
            entry = entry.model_copy(update={"chapter_title": NEWLINE_TITLE})
        storage.put(entry.key, tone(0.4 + 0.02 * len(entry.normalized)))
        entries.append(entry)
    folder = book_dir_key(record.prefix, record.book)
    storage.put(f"{folder}/manifest.jsonl", "".join(entry_line(e) for e in entries).encode())
    storage.put(f"{folder}/book.json", record.model_dump_json().encode())
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "STORAGE_URL": f"file://{work / 'store'}",
           "BROKER_URL": "redis://127.0.0.1:1/0", "HOME": str(work), "PYTHONUNBUFFERED": "1"}
    return env, work / "store", work / "manifests", epub, entries


def _assemble(book_fixture, *args: str) -> subprocess.CompletedProcess:
    env, _, manifests, _, _ = book_fixture
    done = cli(env, "assemble", BOOK, "--manifest-dir", str(manifests), *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_enqueue_keeps_the_epub_metadata_and_cover(book):
    from worker.books.manifest import BookRecord

    _, store, _, _, entries = book
    record = BookRecord.model_validate_json((store / "books" / BOOK / "book.json").read_text())
    assert record.meta.title == TITLE and record.meta.authors == AUTHORS and record.meta.narrators == [NARRATOR]
    assert (record.meta.year, record.meta.language, record.meta.description) == (2021, "es-ES", DESCRIPTION)
    assert record.meta.cover_key == f"books/{BOOK}/cover.png"
    assert (store / record.meta.cover_key).read_bytes() == png((200, 30, 30))
    titles = {e.chapter: e.chapter_title for e in entries}
    assert HEADING_1 in titles.values()  # ";", "=" and "#" came through pandoc, the EPUB and the reader
    assert len(titles) == 4  # pandoc's title page, then the three chapters


def test_m4b_from_the_epub_metadata(book):
    """``--m4b --format mp3`` with no flags: everything comes from the record that enqueue wrote."""
    from mutagen.mp4 import MP4

    _, store, _, _, entries = book
    done = _assemble(book, "--format", "mp3", "--m4b")
    name = "Ana Autora, Bruno Segundo - El libro - uno - dos.m4b"
    assert name in done.stderr.replace("\n", "")
    path = store / "books" / BOOK / name
    probe = ffprobe(path)
    tags = probe["format"]["tags"]
    assert tags["title"] == TITLE and tags["album"] == TITLE
    assert tags["artist"] == "Ana Autora, Bruno Segundo" and tags["album_artist"] == tags["artist"]
    assert tags["composer"] == NARRATOR and tags["NARRATOR"] == NARRATOR
    assert tags["date"] == "2021" and tags["description"] == DESCRIPTION and tags["genre"] == "Audiobook"
    assert tags["LANGUAGE"] == "es-ES"
    audio = [s for s in probe["streams"] if s["codec_type"] == "audio"]
    assert len(audio) == 1 and audio[0]["codec_name"] == "aac" and audio[0]["tags"]["language"] == "spa"
    pictures = [s for s in probe["streams"] if s["codec_type"] == "video"]
    assert len(pictures) == 1 and pictures[0]["disposition"]["attached_pic"] == 1
    expected = [title for _, title in sorted({(e.chapter, e.chapter_title) for e in entries})]
    assert [c["tags"]["title"] for c in probe["chapters"]] == expected
    assert NEWLINE_TITLE in expected  # ";", "=", "#", "\" and a newline, exactly
    mp4 = MP4(path)
    assert mp4.tags["©nrt"] == [NARRATOR] and bytes(mp4.tags["covr"][0]) == png((200, 30, 30))
    assert mp4.tags["stik"] == [2]  # an audiobook, for Apple's players


def test_mp3_chapters_carry_id3_tags(book):
    from mutagen.id3 import ID3

    _, store, _, _, entries = book
    _assemble(book, "--format", "mp3")
    titles = [title for _, title in sorted({(e.chapter, e.chapter_title) for e in entries})]
    for number, title in enumerate(titles, start=1):
        path = store / "books" / BOOK / "chapters" / f"{number:03d}.mp3"
        tags = ID3(path)  # read as ID3v2.4 (mutagen translates: TYER → TDRC); the file holds v2.3
        assert tags.version[:2] == (2, 3)
        assert str(tags["TIT2"]) == title and str(tags["TALB"]) == TITLE
        assert str(tags["TPE1"]) == "Ana Autora, Bruno Segundo" and str(tags["TCOM"]) == NARRATOR
        assert str(tags["TRCK"]) == f"{number}/{len(titles)}" and str(tags["TXXX:NARRATOR"]) == NARRATOR
        assert str(tags["TDRC"]) == "2021" and str(tags["TLAN"]) == "spa"
        assert tags.getall("COMM")[0].text == [DESCRIPTION]
        picture = tags.getall("APIC")[0]
        assert picture.type == 3 and picture.mime == "image/png" and picture.data == png((200, 30, 30))
        assert sf.info(path).samplerate == 24000  # libsndfile still reads the tagged file


@pytest.mark.parametrize("fmt", ["flac", "opus", "ogg"])
def test_flac_and_ogg_chapters_carry_vorbis_comments(book, fmt):
    from mutagen import File
    from mutagen.flac import Picture

    _, store, _, _, _ = book
    _assemble(book, "--format", fmt, "--chapters", "2-3")
    extension = "opus" if fmt == "opus" else fmt
    path = store / "books" / BOOK / "chapters" / f"003.{extension}"
    audio = File(path)
    assert audio["TITLE"] == [NEWLINE_TITLE] and audio["ALBUM"] == [TITLE]
    assert audio["ARTIST"] == ["Ana Autora, Bruno Segundo"] and audio["COMPOSER"] == [NARRATOR]
    assert audio["TRACKNUMBER"] == ["3"] and audio["TRACKTOTAL"] == ["4"]  # its place in the book, not in the run
    assert audio["DATE"] == ["2021"] and audio["LANGUAGE"] == ["es-ES"] and audio["DESCRIPTION"] == [DESCRIPTION]
    pictures = audio.pictures if fmt == "flac" else \
        [Picture(base64.b64decode(block)) for block in audio["METADATA_BLOCK_PICTURE"]]
    picture = pictures[0]
    assert picture.type == 3 and picture.data == png((200, 30, 30))
    assert sf.info(path).samplerate == 24000


def test_flags_win_over_the_epub_and_name_the_file(book, tmp_path):
    from mutagen.flac import FLAC
    from mutagen.mp4 import MP4

    _, store, _, _, _ = book
    cover = tmp_path / "other.png"
    cover.write_bytes(png((10, 200, 10), size=4))
    _assemble(book, "--format", "flac", "--m4b", "--title", "Otro título", "--author", "Otra Autora",
              "--narrator", "Voz Sintética", "--year", "1999", "--language", "en-GB", "--description", "Otra.",
              "--cover", str(cover), "-o", "Mi libro")
    path = store / "books" / BOOK / "Mi libro.m4b"
    probe = ffprobe(path)
    tags = probe["format"]["tags"]
    assert (tags["title"], tags["artist"], tags["composer"], tags["date"]) == \
        ("Otro título", "Otra Autora", "Voz Sintética", "1999")
    assert tags["description"] == "Otra." and tags["LANGUAGE"] == "en-GB"
    assert next(s for s in probe["streams"] if s["codec_type"] == "audio")["tags"]["language"] == "eng"
    assert bytes(MP4(path).tags["covr"][0]) == png((10, 200, 10), size=4)
    chapter = FLAC(store / "books" / BOOK / "chapters" / "002.flac")
    assert chapter["ALBUM"] == ["Otro título"] and chapter["NARRATOR"] == ["Voz Sintética"]
    assert chapter.pictures[0].data == png((10, 200, 10), size=4)


def test_bad_output_name_and_cover_are_refused(book, tmp_path):
    env, _, manifests, _, _ = book
    not_an_image = tmp_path / "cover.txt"
    not_an_image.write_text("hello")
    refused = cli(env, "assemble", BOOK, "--manifest-dir", str(manifests), "--cover", str(not_an_image))
    assert refused.returncode != 0 and "not a JPEG or PNG" in refused.stderr
    refused = cli(env, "assemble", BOOK, "--manifest-dir", str(manifests), "--m4b", "-o", "a/b")
    assert refused.returncode != 0 and "not a path" in refused.stderr
    refused = cli(env, "assemble", BOOK, "--manifest-dir", str(manifests), "-o", "x")
    assert refused.returncode != 0 and "add --m4b" in refused.stderr


def test_file_names():
    from worker.assembly.naming import audiobook_file_name, safe_file_name
    from worker.books.meta import BookMeta

    assert audiobook_file_name(BookMeta(title="Niebla", authors=["Miguel de Unamuno"]), "b") == \
        "Miguel de Unamuno - Niebla.m4b"
    assert audiobook_file_name(BookMeta(title="Niebla"), "b") == "Niebla.m4b"
    assert audiobook_file_name(BookMeta(authors=["Someone"]), "b1") == "b1.m4b"
    assert audiobook_file_name(BookMeta(title='Why? "Now" <*> 100%'), "b") == "Why Now 100.m4b"
    assert safe_file_name("a\nb\tc") == "a b c" and safe_file_name("...x...") == "x" and safe_file_name("CON") == "CON_"
    assert len(safe_file_name("ñ" * 300).encode()) <= 200


def test_ffmetadata_escapes_every_special_character():
    from worker.assembly.ffmeta import ChapterMark, escape, ffmetadata

    assert escape("a;b=c#d\\e\nf") == "a\\;b\\=c\\#d\\\\e\\\nf"
    text = ffmetadata({"title": "x=y", "artist": ""}, [ChapterMark(0, 1000, "#1\n;2")])
    assert text == ";FFMETADATA1\ntitle=x\\=y\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=1000\ntitle=\\#1\\\n\\;2\n"


def test_a_corpus_that_is_not_an_epub_has_no_metadata(tmp_path):
    from producer.book_meta import stored_book_meta
    from worker.books.meta import BookMeta
    from worker.storage.local import LocalStorage

    text = tmp_path / "book.txt"
    text.write_text("Capítulo 1\n\nHola.\n")
    assert stored_book_meta(text, LocalStorage(tmp_path / "s"), "books", "b") == BookMeta()
