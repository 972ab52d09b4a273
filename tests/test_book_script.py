"""A book as a script, read without services: voice tags, the dialogue voice (Spanish dashes, « », English quotes),
pause markers and scene breaks, and the lexicon. Every character of the source still lands in exactly one segment."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer.corpus import segments
from producer.lexicon import LexiconError, parse_lexicon
from producer.script import Cast, ScriptError

LIMIT = 400

QUIJOTE_DIALOGUE = """Capítulo primero.

—¿Quién es? —dijo Sancho—. No lo sé.

Don Quijote miró a su escudero y calló.

—Cualquiera yantaría yo —respondió don Quijote—, porque me haría mucho al caso.

Y dijo entonces: «Vamos, Sancho», y se fue.
"""

# (spoken text, voice) of every segment, in order: the speech in the dialogue voice, the narration (speaker tags
# included) in the narrator's
EXPECTED_DIALOGUE = [
    ("Capítulo primero.", "narrador"),
    ("¿Quién es?", "sancho"),
    ("dijo Sancho.", "narrador"),
    ("No lo sé.", "sancho"),
    ("Don Quijote miró a su escudero y calló.", "narrador"),
    ("Cualquiera yantaría yo", "sancho"),
    ("respondió don Quijote,", "narrador"),
    ("porque me haría mucho al caso.", "sancho"),
    ("Y dijo entonces:", "narrador"),
    ("«Vamos, Sancho»", "sancho"),
    (", y se fue.", "narrador"),
]


def _book(tmp_path: Path, text: str, name: str = "book.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_dialogue_dashes_give_speech_one_voice_and_the_narration_with_its_speaker_tags_the_other(tmp_path):
    path = _book(tmp_path, QUIJOTE_DIALOGUE)
    cast = Cast("narrador", frozenset({"narrador", "sancho"}), dialogue="sancho")
    found = list(segments(path, LIMIT, "es", cast=cast))
    assert [(s.text, s.voice) for s in found] == EXPECTED_DIALOGUE
    assert "".join(s.raw for s in found) == path.read_text(encoding="utf-8")  # nothing lost or repeated


def test_english_quotes_are_speech():
    from producer.script import split_dialogue

    assert split_dialogue('"Come in," she said. "Sit down."') == [
        ('"Come in,"', True), (" she said. ", False), ('"Sit down."', True)]


def test_tags_switch_the_voice_until_the_next_one_and_unknown_tags_are_refused_with_the_line(tmp_path):
    path = _book(tmp_path, "[main] Once there was a mouse. [town] Hello, friend.\n\nStill the town mouse.\n\n"
                           "[main] The end.\n\n[nadie] Who is this?\n")
    cast = Cast("main", frozenset({"main", "town"}), tags=True)
    with pytest.raises(ScriptError, match=r"book\.txt:7: the voice tag \[nadie\] names no voice"):
        list(segments(path, LIMIT, "en", cast=cast))
    fallback = Cast("main", frozenset({"main", "town"}), tags=True, unknown_falls_back_to="main")
    found = list(segments(path, LIMIT, "en", cast=fallback))
    assert [(s.text, s.voice) for s in found] == [
        ("Once there was a mouse.", "main"), ("Hello, friend.", "town"), ("Still the town mouse.", "town"),
        ("The end.", "main"), ("Who is this?", "main")]
    assert not any("[" in s.text for s in found)


def test_pause_markers_and_scene_breaks_become_silence_and_are_never_spoken(tmp_path):
    path = _book(tmp_path, "Capítulo 1.\n\nUna frase. [pause 2s] Otra frase.\n\nSigue [pause] aquí.\n\n* * *\n\n"
                           "Tras la escena.\n")
    found = list(segments(path, LIMIT, "es"))
    assert not any("pause" in s.text or "*" in s.text for s in found)
    pauses = {s.text: s.pause_after_s for s in found}
    assert pauses["Una frase."] == 2.0 and pauses["Sigue"] == 1.0
    assert pauses["aquí."] == 2.0  # the scene break's pause (--scene-pause, 2 s by default)
    assert pauses["Otra frase."] is None and pauses["Tras la escena."] is None
    assert "".join(s.raw for s in found) == path.read_text(encoding="utf-8")


def test_the_lexicon_applies_whole_words_before_normalisation(tmp_path):
    lexicon = parse_lexicon("# pronunciations\nDana = Déina\ncase: US = Estados Unidos\nSr. = señor\n"
                            "re: \\bcap\\.\\s*(\\d+) = capítulo \\1\n")
    path = _book(tmp_path, "Dana llegó con el Sr. Pérez desde US. Danae no; us tampoco. Ver cap. 3.\n")
    text = " ".join(s.text for s in segments(path, LIMIT, "es", lexicon=lexicon))
    assert text == "Déina llegó con el señor Pérez desde Estados Unidos. Danae no; us tampoco. Ver capítulo tres."


@pytest.mark.parametrize(("line", "needle"), [
    ("Dana -> Déina", "has no ' = '"),
    ("re: (unclosed = x", "is not valid"),
    ("case: = vacío", "both sides"),
])
def test_a_malformed_lexicon_line_names_the_file_the_line_and_the_fix(line, needle):
    with pytest.raises(LexiconError, match=rf"words\.txt:2: .*{needle}"):
        parse_lexicon(f"# ok\n{line}\n", "words.txt")
