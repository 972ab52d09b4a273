"""Text normalisation for speech: numbers, ordinals, years, currency, and Roman numerals in headings.

Built on num2words (a maintained library) for Spanish and English. Only what a narrator would read differently from
the written form is changed; everything else passes through untouched. The manifest keeps both forms.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from num2words import num2words

LANGUAGES = ("es", "en")

_CURRENCY = {"€": "EUR", "$": "USD", "£": "GBP", "euros": "EUR", "euro": "EUR", "dólares": "USD", "dollars": "USD"}
_UNITS = {
    "es": {"EUR": ("euro", "euros"), "USD": ("dólar", "dólares"), "GBP": ("libra", "libras")},
    "en": {"EUR": ("euro", "euros"), "USD": ("dollar", "dollars"), "GBP": ("pound", "pounds")},
}
_DIGIT = re.compile(r"\d")
_ROMAN = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
_ROMAN_RE = r"M{0,3}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})"
_HEADING_ROMAN = re.compile(
    rf"\b(cap[íi]tulo|chapter|libro|book|parte|part|tomo|volume)(\s+)({_ROMAN_RE})\b(?=[\s.:,-]|$)", re.IGNORECASE)
_BARE_ROMAN = re.compile(rf"^\s*({_ROMAN_RE})\s*\.?\s*$")

_NUMBER = {"es": r"\d{1,3}(?:\.\d{3})+(?:,\d+)?|\d+(?:,\d+)?", "en": r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"}
_ORDINAL = {"es": re.compile(r"\b(\d+)\.?\s?([ºª°])"), "en": re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)}


def _words(number: int | Decimal, lang: str, **options: str) -> str:
    """num2words, typed (the library has no annotations)."""
    words: str = num2words(number, lang=lang, **options)
    return words


def roman_to_int(numeral: str) -> int:
    total, previous = 0, 0
    for char in reversed(numeral.upper()):
        value = _ROMAN[char]
        total = total - value if value < previous else total + value
        previous = max(previous, value)
    return total


def _parse(number: str, lang: str) -> Decimal | None:
    thousands, decimal = (".", ",") if lang == "es" else (",", ".")
    try:
        return Decimal(number.replace(thousands, "").replace(decimal, "."))
    except InvalidOperation:
        return None


def _cardinal(value: Decimal, lang: str) -> str:
    if value == value.to_integral_value():
        return _words(int(value), lang=lang)
    whole, _, fraction = str(value).partition(".")
    point = "coma" if lang == "es" else "point"
    digits = " ".join(_words(int(d), lang=lang) for d in fraction) if fraction.startswith("0") \
        else _words(int(fraction), lang=lang)
    return f"{_words(int(whole), lang=lang)} {point} {digits}"


def _money(value: Decimal, code: str, lang: str) -> str:
    singular, plural = _UNITS[lang][code]
    if value == value.to_integral_value():
        count = int(value)
        words = ("un" if lang == "es" else "one") if count == 1 else _words(count, lang=lang)
        return f"{words} {singular if count == 1 else plural}"
    return _words(value, lang=lang, to="currency", currency=code)


def _ordinal(number: int, feminine: bool, lang: str) -> str:
    words = _words(number, lang=lang, to="ordinal")
    if lang == "es" and feminine:
        words = " ".join(w[:-1] + "a" if w.endswith("o") else w for w in words.split())
    return words


def normalize(text: str, lang: str, heading: bool = False) -> str:
    """The text as it should be spoken. ``heading`` also reads Roman numerals after 'Capítulo', 'Chapter'..."""
    if lang not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {lang!r}")
    if heading:
        text = _HEADING_ROMAN.sub(lambda m: f"{m[1]}{m[2]}{_words(roman_to_int(m[3]), lang=lang)}", text)
        bare = _BARE_ROMAN.match(text)
        if bare and bare[1]:
            return _words(roman_to_int(bare[1]), lang=lang)
    if not _DIGIT.search(text):
        return text
    number = _NUMBER[lang]
    text = re.sub(rf"([€$£])\s?({number})", lambda m: _spoken_money(m[2], _CURRENCY[m[1]], lang) or m[0], text)
    text = re.sub(rf"({number})\s?(€|euros?|dólares|dollars)(?!\w)",
                  lambda m: _spoken_money(m[1], _CURRENCY[m[2].lower()], lang) or m[0], text)
    text = _ORDINAL[lang].sub(lambda m: _ordinal(int(m[1]), m[2] == "ª", lang), text)
    if lang == "en":
        text = re.sub(r"\b(1[1-9]\d\d|20\d\d)\b(?![.,]\d)", lambda m: _words(int(m[1]), lang="en", to="year"), text)
    return re.sub(rf"(?<![\w.,])({number})(?![\w])", lambda m: _spoken_number(m[1], lang) or m[0], text)


def _spoken_money(number: str, code: str, lang: str) -> str | None:
    value = _parse(number, lang)
    return None if value is None else _money(value, code, lang)


def _spoken_number(number: str, lang: str) -> str | None:
    value = _parse(number, lang)
    return None if value is None else _cardinal(value, lang)


_ES_MARKERS = re.compile(r"[ñáéíóú¿¡]|\b(que|el|los|las|del|por|una|como|pero|para)\b", re.IGNORECASE)
_EN_MARKERS = re.compile(r"\b(the|and|of|to|that|with|was|his|her|which)\b", re.IGNORECASE)


def detect_language(sample: str) -> str:
    """Spanish or English, from function words and accents in a sample of the text."""
    return "es" if len(_ES_MARKERS.findall(sample)) >= len(_EN_MARKERS.findall(sample)) else "en"
