"""Splitting paragraphs into segments a voice can read in one breath, without losing a character.

A paragraph's raw text is cut into pieces whose concatenation is the raw text exactly (whitespace travels with the
piece before it). Cuts fall at sentence ends, aware of abbreviations and of Spanish em-dash dialogue; a sentence longer
than the limit is cut at ``, ; :`` or before a dash, then at spaces, never inside a word (a "word" longer than the
whole limit, such as a pasted URL, is the only thing cut mid-way, with a warning). Sentences are then packed up to the
limit, measured on the normalised text that will actually be spoken.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

log = logging.getLogger(__name__)

ABBREVIATIONS = frozenset(
    "sr sra srta sres sras d dña dn dr dra drs ud uds vd vds etc ej pág págs núm nro art cap caps lic ing prof "
    "profa excmo excma ilmo ilma sto sta mr mrs ms st jr vs no fig vol vols ed eds approx dept gral cía av avda pl "
    "vid".split()
)

_SENTENCE_END = re.compile(r"[.!?…]+[»\"”’')\]]*\s+")
_SOFT_BREAK = re.compile(r"[,;:]\s+|\s+(?=—)")
_SPACE = re.compile(r"\s+")
_WORD_BEFORE = re.compile(r"(\w+)$")

Measure = Callable[[str], int]


def _is_boundary(raw: str, match: re.Match[str]) -> bool:
    punctuation = match.group().rstrip()
    after = raw[match.end() : match.end() + 2]
    if punctuation.startswith("."):
        word = _WORD_BEFORE.search(raw[: match.start()])
        if word and (word[1].lower() in ABBREVIATIONS or (len(word[1]) == 1 and word[1].isalpha())):
            return False
    if after[:1].islower():
        return False
    # Spanish dialogue: "—¿Quién va? —preguntó Sancho." The tag after the dash continues the same sentence.
    return not (after[:1] == "—" and after[1:2].islower())


def split_sentences(raw: str) -> list[str]:
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(raw):
        if match.end() < len(raw) and _is_boundary(raw, match):
            pieces.append(raw[start : match.end()])
            start = match.end()
    pieces.append(raw[start:])
    return [piece for piece in pieces if piece]


def _window(text: str, limit: int, measure: Measure) -> str:
    """A prefix long enough to hold every cut that could fit: grows while it still measures within the limit."""
    size = 4 * limit
    while size < len(text) and measure(text[:size]) <= limit:
        size *= 2
    return text[:size]


def _best_cut(text: str, limit: int, measure: Measure, pattern: re.Pattern[str]) -> int:
    """The furthest cut point of ``pattern`` whose prefix measures within the limit (0 if none)."""
    points = [m.end() for m in pattern.finditer(text) if 0 < m.end() < len(text)]
    low, high, best = 0, len(points) - 1, 0
    while low <= high:  # the measure grows with the prefix, so binary search finds the furthest fitting point
        middle = (low + high) // 2
        if measure(text[: points[middle]]) <= limit:
            best, low = points[middle], middle + 1
        else:
            high = middle - 1
    return best


def _hard_cut(text: str, limit: int, measure: Measure) -> int:
    low, high = 1, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if measure(text[:middle]) <= limit:
            low = middle
        else:
            high = middle - 1
    log.warning("a %d-character word is longer than the segment limit; cutting it", len(text.split()[0]))
    return low


def split_long(sentence: str, limit: int, measure: Measure) -> list[str]:
    """Cut one over-long sentence at clause boundaries, then spaces; the pieces concatenate to the sentence."""
    pieces = []
    rest = sentence
    while rest:
        window = _window(rest, limit, measure)  # only a prefix is measured: long inputs stay linear
        if len(window) == len(rest) and measure(rest) <= limit:
            pieces.append(rest)
            break
        cut = _best_cut(window, limit, measure, _SOFT_BREAK) or _best_cut(window, limit, measure, _SPACE) \
            or _hard_cut(window, limit, measure)
        pieces.append(rest[:cut])
        rest = rest[cut:]
    return pieces


def split_paragraph(raw: str, limit: int, measure: Measure) -> list[str]:
    """Raw pieces of one paragraph, each speaking at most ``limit`` (as ``measure`` counts), packed greedily."""
    units: list[str] = []
    for sentence in split_sentences(raw):
        units.extend(split_long(sentence, limit, measure) if measure(sentence) > limit else [sentence])
    packed: list[str] = []
    for unit in units:
        if packed and (not packed[-1].strip() or not unit.strip() or measure(packed[-1] + unit) <= limit):
            packed[-1] += unit
        else:
            packed.append(unit)
    return packed
