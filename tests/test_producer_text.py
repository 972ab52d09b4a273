"""The producer's reading, chapters, segments and normalisation, on the real Quijote and on hostile files.

The Quijote is the excerpt in ``corpora/`` (chapters I and II, as published), or the whole novel when ``F5_CORPUS``
names it: every expectation here is read off the file itself, so the same tests hold for both."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from producer.corpus import body_paragraphs, segments
from producer.normalize import detect_language, normalize
from producer.reading import CorpusError
from producer.segmenter import split_paragraph, split_sentences
from worker.speech import utf8_len

LIMIT = 160


@pytest.fixture(scope="module")
def quijote(quijote_path):
    return list(segments(quijote_path, LIMIT, "es"))


def _framed(text: str) -> bool:
    return "*** START OF THE PROJECT GUTENBERG EBOOK" in text


def test_chapters_match_the_books_headings(quijote, quijote_path):
    text = quijote_path.read_text(encoding="utf-8-sig")
    headings = [line.strip() for line in text.splitlines() if line.startswith("Capítulo ")]
    assert len(headings) >= 2  # 126 in the whole novel
    titles = [s.chapter_title for s in quijote if s.heading and s.index == 1]
    assert [t.split(".")[0] for t in titles] == [h.split(".")[0] for h in headings]
    assert all(title.startswith(heading) for title, heading in zip(titles, headings, strict=True))
    front_matter = _framed(text)  # the novel has a title page before its first chapter; the excerpt starts at one
    assert sorted({s.chapter for s in quijote}) == list(range(0 if front_matter else 1, len(headings) + 1))
    assert all("Gutenberg" not in s.raw for s in quijote)


def test_text_round_trips_exactly(quijote, quijote_path):
    body = "".join(p.raw for p in body_paragraphs(quijote_path, "utf-8"))
    assert "".join(s.raw for s in quijote) == body
    original = quijote_path.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    if _framed(original):
        start = original.index("\n", original.index("*** START OF THE PROJECT GUTENBERG EBOOK")) + 1
        original = original[start : original.index("*** END OF THE PROJECT GUTENBERG EBOOK")]
    assert body == original


def test_every_segment_is_within_the_limit_and_speakable(quijote):
    assert all(0 < utf8_len(s.text) <= LIMIT for s in quijote)
    assert all(s.text == s.text.strip() and "  " not in s.text for s in quijote)
    keys = [(s.chapter, s.index) for s in quijote]
    assert len(keys) == len(set(keys))
    for chapter in {s.chapter for s in quijote}:
        indexes = [s.index for s in quijote if s.chapter == chapter]
        assert indexes == list(range(1, len(indexes) + 1))


def test_two_runs_give_identical_segments(quijote, quijote_path):
    assert list(segments(quijote_path, LIMIT, "es")) == quijote


def test_no_word_is_cut(quijote):
    words = {w for s in quijote for w in re.findall(r"\w+", s.raw)}
    for s in quijote[:3000]:
        edge = s.raw.strip()
        assert re.match(r"\w+", edge).group() in words if re.match(r"\w", edge) else True


def test_sentences_respect_abbreviations_and_dialogue():
    assert split_sentences("El Sr. Pérez llegó. Luego se fue. ") == ["El Sr. Pérez llegó. ", "Luego se fue. "]
    assert split_sentences("Lo vio D. Quijote. Y calló.") == ["Lo vio D. Quijote. ", "Y calló."]
    dialogue = "—¿Quién va? —preguntó Sancho—. Soy yo. —Pues entra."
    assert split_sentences(dialogue) == ["—¿Quién va? —preguntó Sancho—. ", "Soy yo. ", "—Pues entra."]


def test_a_long_unpunctuated_paragraph_is_split_at_spaces_only():
    words = [f"palabra{i}" for i in range(120_000)]  # about 1.3 MB with no punctuation at all
    raw = " ".join(words) + "\n"
    pieces = split_paragraph(raw, 200, lambda r: utf8_len(" ".join(r.split())))
    assert "".join(pieces) == raw
    assert all(utf8_len(" ".join(p.split())) <= 200 for p in pieces)
    assert [w for p in pieces for w in p.split()] == words


def test_a_long_sentence_prefers_clause_boundaries():
    sentence = ("Y así, del poco dormir y del mucho leer, se le secó el celebro, de manera que vino a perder el "
                "juicio; llenósele la fantasía de todo aquello que leía en los libros.")
    pieces = split_paragraph(sentence, 80, utf8_len)
    assert "".join(pieces) == sentence
    assert all(p.rstrip().endswith((",", ";", ".")) for p in pieces)


@pytest.mark.parametrize(("text", "lang", "heading", "expected"), [
    ("En 1605 se publicó.", "es", False, "En mil seiscientos cinco se publicó."),
    ("Costó 12,50 € y 3 euros.", "es", False, "Costó doce euros con cincuenta céntimos y tres euros."),
    ("Era la 2.ª vez y el 1.º día.", "es", False, "Era la segunda vez y el primero día."),
    ("Pesa 3,5 kilos y 1.234 gramos.", "es", False, "Pesa tres coma cinco kilos y mil doscientos treinta y cuatro "
                                                      "gramos."),
    ("Capítulo XXXIX. Donde el cautivo cuenta su vida", "es", True, "Capítulo treinta y nueve. Donde el cautivo "
                                                                       "cuenta su vida"),
    ("In 1999 it cost $5 on the 21st.", "en", False, "In nineteen ninety-nine it cost five dollars on the "
                                                     "twenty-first."),
    ("CHAPTER IV. The Storm", "en", True, "CHAPTER four. The Storm"),
    ("Sin números aquí.", "es", False, "Sin números aquí."),
])
def test_normalisation(text, lang, heading, expected):
    assert normalize(text, lang, heading=heading) == expected


def test_language_detection(quijote):
    assert detect_language(" ".join(s.text for s in quijote[:200])) == "es"
    assert detect_language("It was the best of times, it was the worst of times, and the age of wisdom.") == "en"


def test_manifest_keeps_raw_and_normalised_text(tmp_path):
    book = tmp_path / "numeros.txt"
    book.write_text("Capítulo 1.\n\nEn 1605 la olla costaba 3 reales y 25 maravedís.\n", encoding="utf-8")
    with_numbers = next(s for s in segments(book, LIMIT, "es") if "1605" in s.raw)
    assert with_numbers.text != " ".join(with_numbers.raw.split())
    assert "mil seiscientos cinco" in with_numbers.text and "1605" in with_numbers.raw


@pytest.mark.parametrize("assemble", [None, "flac"])
def test_resume_rebuilds_exactly_the_enqueued_job(quijote, assemble):
    """``resume`` rebuilds a job from its manifest line: the same job (content, key, and the ``assemble`` flag that
    makes workers count it towards its chapter)."""
    from producer.jobs import BookJobs, book_record
    from worker.contract import JobParams, VoiceSpec

    record = book_record("q", "books", VoiceSpec(ref_audio="voices/v.wav", ref_text="Hola.", sha256="a" * 64),
                         JobParams(), "es", LIMIT, 1, None, Path("quijote.txt"))
    record.extra["assemble"] = assemble
    jobs = BookJobs(record, None)
    for message in jobs.single_messages(iter(quijote[:30])):
        entry = message.entries[0]
        again = jobs.entry_job(entry)
        assert again.model_dump(mode="json", exclude_none=True) == message.kwargs["job"]
        assert entry.task_id == message.task_id and entry.key == again.resolved_key()
        assert again.metadata.get("assemble") is (True if assemble else None)


def test_a_segment_key_follows_its_content_not_its_place():
    """An edit that shifts a chapter's segments leaves the keys of the unchanged ones as they were."""
    from producer.jobs import BookJobs, book_record
    from worker.contract import JobParams, VoiceSpec

    record = book_record("q", "books", VoiceSpec(ref_audio="voices/v.wav", ref_text="Hola.", sha256="a" * 64),
                         JobParams(), "es", LIMIT, 1, None, Path("quijote.txt"))
    jobs = BookJobs(record, None)
    key = jobs.job("q-001-00005", "Una frase.", "", 1, 5).resolved_key()
    assert jobs.job("q-001-00009", "Una frase.", "", 1, 9).resolved_key() == key  # moved: same audio
    assert jobs.job("q-001-00005", "Otra frase.", "", 1, 5).resolved_key() != key  # edited: new audio
    other_clip = record.model_copy(update={"voice": record.voice.model_copy(update={"sha256": "b" * 64})})
    assert BookJobs(other_clip, None).job("q-001-00005", "Una frase.", "", 1, 5).resolved_key() != key
    assert key.startswith("books/q/001/") and key.endswith(".wav")


# ----------------------------------------------------------------------------------------------- formats


def test_bom_crlf_and_other_encodings(tmp_path):
    utf8 = tmp_path / "a.txt"
    utf8.write_bytes("\ufeffCapítulo I.\r\n\r\nÉrase una vez.\r\n".encode())
    found = list(segments(utf8, 100, "es"))
    assert [s.text for s in found] == ["Capítulo uno.", "Érase una vez."] and not found[0].raw.startswith("\ufeff")
    latin = tmp_path / "b.txt"
    latin.write_bytes("Érase una vez un niño.\n".encode("latin-1"))
    assert [s.text for s in segments(latin, 100, "es", encoding="latin-1")] == ["Érase una vez un niño."]


def test_undecodable_bytes_name_the_offset(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"Hola mundo, esto es texto.\n" * 3000 + b"\xff\xfe mal")
    with pytest.raises(CorpusError, match=r"byte 81000 \(0xff\).*--encoding"):
        list(segments(bad, 100, "es"))


@pytest.mark.parametrize(("name", "content", "needle"), [
    ("empty.txt", b"", None),
    ("binary.txt", bytes(range(256)) * 10, "binary"),
    ("book.pdf", b"%PDF-1.4", "unsupported file type .pdf"),
])
def test_bad_files(tmp_path, name, content, needle):
    path = tmp_path / name
    path.write_bytes(content)
    if needle is None:
        assert list(segments(path, 100, "es")) == []
    else:
        with pytest.raises(CorpusError, match=needle):
            list(segments(path, 100, "es"))


def test_missing_file(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        list(segments(tmp_path / "nope.txt", 100, "es"))


def test_markdown_headings(tmp_path):
    path = tmp_path / "book.md"
    path.write_text("# Uno\n\nPrimer texto.\n\n## Dos\n\nSegundo texto.\n", encoding="utf-8")
    found = list(segments(path, 100, "es"))
    assert [(s.chapter, s.text) for s in found] == [(1, "# Uno"), (1, "Primer texto."), (2, "## Dos"),
                                                     (2, "Segundo texto.")]


def test_jsonl_dataset_script(tmp_path):
    path = tmp_path / "script.jsonl"
    lines = [{"id": "utt-1", "text": "Primera frase."}, {"id": "utt-2", "text": "Segunda frase con 2 números."}]
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", encoding="utf-8")
    found = list(segments(path, 100, "es"))
    assert [(s.source_id, s.text) for s in found] == [("utt-1", "Primera frase."),
                                                      ("utt-2", "Segunda frase con dos números.")]
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": 1, "text": "ok"}\n{"id": 2}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"broken.jsonl:2"):
        list(segments(broken, 100, "es"))


def test_epub_chapters_in_spine_order(tmp_path):
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("t1")
    book.set_title("Prueba")
    book.set_language("es")
    chapters = []
    for number, body in enumerate(["<h1>Primero</h1><p>Texto uno.</p>", "<h1>Segundo</h1><p>Texto dos.</p>"], 1):
        chapter = epub.EpubHtml(title=f"c{number}", file_name=f"c{number}.xhtml", lang="es")
        chapter.content = f"<html><body>{body}</body></html>"
        book.add_item(chapter)
        chapters.append(chapter)
    book.spine = [chapters[1], chapters[0]]  # spine order, not file order
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    path = tmp_path / "book.epub"
    epub.write_epub(str(path), book)
    found = list(segments(Path(path), 100, "es"))
    assert [(s.chapter, s.text) for s in found] == [(1, "Segundo"), (1, "Texto dos."), (2, "Primero"),
                                                     (2, "Texto uno.")]
