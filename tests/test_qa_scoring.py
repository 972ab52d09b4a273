"""The QA library's pure parts: normalisation for comparison, the CER score, the verdict and the best-of-N decision.
No audio model here; the real recognisers are in test_qa_recognition.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from tests.conftest import REPO
from worker.qa.gate import Attempt, QALimits, Verdict, best_attempt, decide, judge, retake_seed
from worker.qa.signal import SignalReport
from worker.qa.textnorm import cer, normalize, score

CLEAN = SignalReport(duration_s=3.0, speech_dbfs=-20.0, leading_silence_s=0.1, trailing_silence_s=0.1,
                     internal_silence_s=0.3)
BROKEN = SignalReport.model_validate({**CLEAN.model_dump(), "internal_silence_s": 3.0,
                                      "reasons": [{"code": "internal_silence", "message": "internal silence 3 s"}]})


# -- normalisation ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "lang", "expected"), [
    ("¡Hola, Señor Núñez! ¿Qué tal?", "es", "hola señor núñez qué tal"),
    ("Straße — «quoted»…  end.", "de", "strasse quoted end"),  # casefold, not lower
    ("ﬁne ＡＢＣ\u00a0x", "en", "fine abc x"),  # NFKC: ligature, full width, no-break space
    ("don't-stop", "en", "don t stop"),  # punctuation is a word break on both sides
    ("Tengo 3 gatos y 21 perros.", "es", "tengo tres gatos y veintiuno perros"),
    ("Costó 1.000 euros, o 3,5 por persona", "es", "costó mil euros o tres coma cinco por persona"),
    ("It cost 1,000 dollars, or 3.5 each", "en", "it cost one thousand dollars or three point five each"),
    ("el 1º y la 2ª", "es", "el primero y la segunda"),
    ("the 3rd of May, 1605", "en", "the third of may sixteen oh five"),
    ("Il y a 2 chats", "fr", "il y a deux chats"),
    ("Tengo 3 gatos", "es-ES", "tengo tres gatos"),  # locales use their language's converter
    ("abc 12 def", "xx", "abc 12 def"),  # a language num2words does not know keeps its digits
])
def test_normalize(text: str, lang: str, expected: str) -> None:
    assert normalize(text, lang) == expected


def test_numbers_as_digits_or_words_compare_equal() -> None:
    assert cer("En mil seiscientos cinco, tres caballeros.", "en 1605 tres caballeros", "es") == 0.0
    assert cer("twenty-one pilots", "21 Pilots!", "en") == 0.0


# -- CER --------------------------------------------------------------------------------------------------------------

def test_cer_counts_characters_after_normalisation() -> None:
    assert cer("Some call me nature.", "SOME call me, nature", "en") == 0.0
    assert cer("some call me", "someone call me", "en") == pytest.approx(3 / 12)
    scored = score("Some call me nature, others call me mother nature.",
                   "someone call me nature others call me mother nature", "en")
    assert scored.cer == pytest.approx(3 / 48) and scored.insertions == 3 and scored.deletions == 0
    assert scored.missing_words == ("some",) and scored.extra_words == ("someone",)


def test_empty_sides() -> None:
    assert cer("Some text.", "", "en") == 1.0  # nothing heard
    assert cer("Some text.", "  ...  ", "en") == 1.0  # punctuation is nothing
    assert cer("…", "", "en") == 0.0  # nothing to say, nothing said
    assert cer("…", "hello", "en") == 1.0


def test_a_skipped_clause_and_a_hallucination_are_visible() -> None:
    text = "En un lugar de la Mancha, de cuyo nombre no quiero acordarme, vivía un hidalgo."
    skipped = score(text, "en un lugar de la mancha vivía un hidalgo", "es")
    assert 0.3 < skipped.cer < 0.5 and skipped.missing_words[:2] == ("de", "cuyo") and not skipped.extra_words
    invented = score("Hola.", "hola hola hola y adiós", "es")
    assert invented.cer > 1.0 and invented.extra_words  # insertions can exceed the reference


# -- verdicts ---------------------------------------------------------------------------------------------------------

def test_verdict_without_a_transcript_rests_on_the_signal() -> None:
    assert judge(CLEAN, "Hola.", "es").passed
    verdict = judge(BROKEN, "Hola.", "es")
    assert not verdict.passed and [r.code for r in verdict.reasons] == ["internal_silence"] and verdict.cer is None


def test_verdict_with_a_transcript() -> None:
    good = judge(CLEAN, "Some call me nature.", "en", "someone call me nature", recognizer="pocketsphinx")
    assert good.passed and good.cer == pytest.approx(3 / 19) and good.recognizer == "pocketsphinx"
    wrong = judge(CLEAN, "Some call me nature.", "en", "the weather is fine")
    assert not wrong.passed and [r.code for r in wrong.reasons] == ["high_cer"]
    deaf = judge(CLEAN, "Some call me nature.", "en", "")
    assert not deaf.passed and deaf.cer == 1.0 and [r.code for r in deaf.reasons] == ["no_transcript"]
    assert judge(CLEAN, "Some call me nature.", "en", "someone call me nature", QALimits(max_cer=3 / 19)).passed
    assert not judge(CLEAN, "Some call me nature.", "en", "someone call me nature", QALimits(max_cer=0.15)).passed


def test_score_ranks_signal_first_then_cer() -> None:
    clean_bad_text = judge(CLEAN, "abc def", "en", "xyz")
    broken_perfect_text = judge(BROKEN, "abc def", "en", "abc def")
    clean_good_text = judge(CLEAN, "abc def", "en", "abc deg")
    assert clean_good_text.score > clean_bad_text.score > broken_perfect_text.score


def test_verdict_round_trips_through_json() -> None:
    verdict = judge(BROKEN, "Some call me nature.", "en", "someone call me", recognizer="pocketsphinx")
    again = Verdict.model_validate_json(verdict.model_dump_json())
    assert again == verdict
    assert json.loads(verdict.model_dump_json())["reasons"][0]["code"] == "internal_silence"


def test_limits_are_bounded_and_quote_the_bad_value() -> None:
    with pytest.raises(ValidationError, match=r"1\.5"):
        QALimits(max_cer=1.5)
    with pytest.raises(ValidationError):
        QALimits(max_attempts=0)
    with pytest.raises(ValidationError):
        QALimits(max_cer=0.2, surprise=1)  # type: ignore[call-arg]


# -- best of N --------------------------------------------------------------------------------------------------------

def _attempt(n: int, verdict: Verdict, seed: int = 7) -> Attempt:
    return Attempt(attempt=n, seed=retake_seed(seed, n), verdict=verdict)


def test_first_take_is_rendered_first() -> None:
    decision = decide([], max_attempts=3)
    assert decision.action == "rerender" and decision.next_attempt == 1 and decision.best is None


def test_a_passing_take_ends_the_segment() -> None:
    first = _attempt(1, judge(CLEAN, "abc def", "en", "abc def"))
    decision = decide([first], max_attempts=3)
    assert decision.action == "passed" and decision.best == first and decision.next_attempt is None


def test_a_failing_take_is_rerendered_with_a_new_seed_until_takes_run_out() -> None:
    first = _attempt(1, judge(CLEAN, "abc def", "en", "xyz"))
    decision = decide([first], max_attempts=3)
    assert decision.action == "rerender" and decision.next_attempt == 2
    assert decision.next_seed == retake_seed(7, 2) != 7 and decision.best == first
    second = _attempt(2, judge(BROKEN, "abc def", "en", "abc def"))
    third = _attempt(3, judge(CLEAN, "abc def", "en", "abc xyz"))
    final = decide([first, second, third], max_attempts=3)
    # Nothing passed: keep the signal-clean take with the lowest CER, and ask a person.
    assert final.action == "needs_review" and final.best == third


def test_a_later_pass_wins_and_ties_keep_the_earlier_take() -> None:
    fail = _attempt(1, judge(CLEAN, "abc def", "en", "xyz"))
    passed = _attempt(2, judge(CLEAN, "abc def", "en", "abc def"))
    assert decide([fail, passed], max_attempts=2).best == passed
    twin_a = _attempt(1, judge(CLEAN, "abc def", "en", "abc dex"))
    twin_b = _attempt(2, judge(CLEAN, "abc def", "en", "abc dey"))
    assert best_attempt([twin_b, twin_a]) == twin_a


def test_retake_seeds_are_stable_and_distinct() -> None:
    assert retake_seed(12345, 1) == 12345  # the first take is the normal render
    seeds = [retake_seed(12345, n) for n in range(2, 10)]
    assert seeds == [retake_seed(12345, n) for n in range(2, 10)] and len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**31 for s in seeds)
    with pytest.raises(ValueError, match="start at 1"):
        retake_seed(1, 0)
    with pytest.raises(ValueError, match="at least 1"):
        decide([], max_attempts=0)


# -- layering ---------------------------------------------------------------------------------------------------------

def test_the_qa_library_imports_nothing_heavy() -> None:
    code = ("import json, sys\nimport worker.qa, worker.qa.asr, worker.qa.asr.pocketsphinx, "
            "worker.qa.asr.faster_whisper\nprint(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    loaded = {m.split(".")[0] for m in json.loads(done.stdout.strip().splitlines()[-1])}
    # Nor the qa extra: signal checks and verdicts without a transcript work in a base install.
    heavy = {"torch", "producer", "gateway", "celery", "redis", "pocketsphinx", "faster_whisper", "ctranslate2",
             "jiwer"}
    assert loaded & heavy == set()
