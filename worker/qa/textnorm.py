"""Text normalisation for comparison, and the one place where a transcript is scored against its segment.

Both sides of a comparison go through :func:`normalize`, so that only what was *said* differs: the segment's text
(already in spoken form, written by the producer) and the recogniser's hypothesis (which writes numbers as digits,
capitalises and punctuates as it likes). The steps, in order:

1. Numbers as words with num2words in the segment's language, read the way ``producer.normalize`` reads them
   (grouped thousands, decimals with "coma"/"point", ordinals ``1º``/``2ª``/``3rd``, English years as years), so a
   hypothesis "1605" meets a reference "sixteen oh-five". The producer cannot be imported here (the worker never
   imports it), hence the short re-statement; languages num2words does not know keep their digits, on both sides.
   This comes before NFKC, which would turn the ordinal marks º and ª into the letters o and a.
2. Unicode NFKC, so that ligatures, full-width forms and non-breaking spaces compare equal to their plain forms.
3. Casefold (``ß`` → ``ss``, which ``lower`` does not do).
4. Everything that is not a letter, a combining mark or a digit becomes a space (accents and ``ñ`` are letters and
   stay), then runs of whitespace collapse to one space.

The score is the character error rate (CER) from jiwer: characters rather than words because a skipped syllable or a
one-letter confusion then costs a little, not a whole word, and because it needs no word segmentation.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from num2words import CONVERTER_CLASSES, num2words

__all__ = ["TextScore", "cer", "normalize", "score", "spell_numbers"]

log = logging.getLogger(__name__)

# Thousands and decimal separators: a comma decimal everywhere but English (num2words' languages are mostly European).
_POINT_WORD = {"es": "coma", "en": "point"}
_ES_ORDINAL = re.compile(r"\b(\d+)\.?\s?([ºª])")
_EN_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_EN_YEAR = re.compile(r"\b(1[1-9]\d\d|20\d\d)\b(?![.,]\d)")
_SPACES = re.compile(r"\s+")


def _number_pattern(lang: str) -> re.Pattern[str]:
    thousands, decimal = _separators(lang)
    t, d = re.escape(thousands), re.escape(decimal)
    return re.compile(rf"(?<![\w.,])(\d{{1,3}}(?:{t}\d{{3}})+(?:{d}\d+)?|\d+(?:{d}\d+)?)(?!\w)")


def _separators(lang: str) -> tuple[str, str]:
    return (",", ".") if lang.split("_")[0] == "en" else (".", ",")


def _num2words_lang(lang: str) -> str | None:
    """The num2words converter for ``lang`` ("es", "es-ES", "pt_BR"...), or None when it has none."""
    code = lang.replace("-", "_")
    for candidate in (code, code.split("_")[0].lower()):
        if candidate in CONVERTER_CLASSES:
            return candidate
    return None


def _cardinal(number: str, lang: str, n2w: str) -> str:
    thousands, decimal = _separators(lang)
    try:
        value = Decimal(number.replace(thousands, "").replace(decimal, "."))
    except InvalidOperation:
        return number
    if value == value.to_integral_value():
        return str(num2words(int(value), lang=n2w))
    whole, _, fraction = str(value).partition(".")
    point = _POINT_WORD.get(n2w.split("_")[0], decimal)
    if fraction.startswith("0"):
        digits = " ".join(str(num2words(int(d), lang=n2w)) for d in fraction)
    else:
        digits = str(num2words(int(fraction), lang=n2w))
    return f"{num2words(int(whole), lang=n2w)} {point} {digits}"


def _ordinal(number: int, feminine: bool, n2w: str) -> str:
    words = str(num2words(number, lang=n2w, to="ordinal"))
    if feminine:  # Spanish: primero → primera, vigésimo primero → vigésima primera
        words = " ".join(w[:-1] + "a" if w.endswith("o") else w for w in words.split())
    return words


def spell_numbers(text: str, lang: str) -> str:
    """``text`` with its numbers written as words in ``lang``; unchanged where num2words does not know the language."""
    if not any(ch.isdigit() for ch in text):
        return text
    n2w = _num2words_lang(lang)
    if n2w is None:
        log.debug("num2words has no language %r; digits are compared as digits", lang)
        return text
    try:
        if n2w == "es":
            text = _ES_ORDINAL.sub(lambda m: _ordinal(int(m[1]), m[2] == "ª", n2w), text)
        elif n2w == "en":
            text = _EN_ORDINAL.sub(lambda m: _ordinal(int(m[1]), False, n2w), text)
            text = _EN_YEAR.sub(lambda m: str(num2words(int(m[1]), lang="en", to="year")), text)
        return _number_pattern(n2w).sub(lambda m: _cardinal(m[1], n2w, n2w), text)
    except (NotImplementedError, OverflowError, ValueError) as exc:  # a converter without ordinals, a huge number
        log.debug("numbers in %r left as digits: %s", text[:80], exc)
        return text


def _keep(char: str) -> bool:
    return unicodedata.category(char)[0] in "LMN"


def normalize(text: str, lang: str) -> str:
    """``text`` reduced to what a listener hears: NFKC, numbers as words, casefolded, letters and digits only."""
    text = spell_numbers(text, lang)  # first: NFKC would turn the ordinal marks of 1º and 2ª into letters
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(ch if _keep(ch) else " " for ch in text)
    return _SPACES.sub(" ", text).strip()


@dataclass(frozen=True)
class TextScore:
    """How a hypothesis compares with its reference, after both were normalised.

    ``missing_words`` (in the reference, not heard: a skip) and ``extra_words`` (heard, not in the reference: a
    hallucination) come from a word alignment and are there for people reviewing a take; ``cer`` is what decides.
    """

    cer: float  # (substitutions + deletions + insertions) / reference characters; above 1.0 when much was added
    reference: str  # normalised
    hypothesis: str  # normalised
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    missing_words: tuple[str, ...] = field(default_factory=tuple)
    extra_words: tuple[str, ...] = field(default_factory=tuple)


def _word_diff(reference: str, hypothesis: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    import jiwer

    words = jiwer.process_words(reference, hypothesis)
    ref, hyp = words.references[0], words.hypotheses[0]
    missing: list[str] = []
    extra: list[str] = []
    for chunk in words.alignments[0]:
        if chunk.type in ("delete", "substitute"):
            missing.extend(ref[chunk.ref_start_idx:chunk.ref_end_idx])
        if chunk.type in ("insert", "substitute"):
            extra.extend(hyp[chunk.hyp_start_idx:chunk.hyp_end_idx])
    return tuple(missing), tuple(extra)


def score(reference: str, hypothesis: str, lang: str) -> TextScore:
    """Normalise both sides with :func:`normalize` and align them, by characters and by words.

    An empty hypothesis scores 1.0 (everything missed); an empty reference (a segment of punctuation only) scores 0.0
    against an empty hypothesis and 1.0 against anything else.
    """
    ref, hyp = normalize(reference, lang), normalize(hypothesis, lang)
    if not ref:
        return TextScore(cer=0.0 if not hyp else 1.0, reference=ref, hypothesis=hyp, insertions=len(hyp),
                         extra_words=tuple(hyp.split()))
    if not hyp:
        return TextScore(cer=1.0, reference=ref, hypothesis=hyp, deletions=len(ref), missing_words=tuple(ref.split()))
    import jiwer  # here, not at the top: signal-only QA (and ``import worker.qa``) works without the qa extra

    chars = jiwer.process_characters(ref, hyp)
    missing, extra = _word_diff(ref, hyp)
    return TextScore(cer=float(chars.cer), reference=ref, hypothesis=hyp, substitutions=chars.substitutions,
                     deletions=chars.deletions, insertions=chars.insertions, missing_words=missing, extra_words=extra)


def cer(reference: str, hypothesis: str, lang: str) -> float:
    """The character error rate of ``hypothesis`` against ``reference``, both normalised for ``lang``."""
    return score(reference, hypothesis, lang).cer
