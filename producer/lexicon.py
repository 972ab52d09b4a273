"""A pronunciation lexicon: how names, loan words and abbreviations are to be said, one ``written = spoken`` per line.

Applied to each segment's text before normalisation (numbers, ordinals…), per book; the book record keeps the
lexicon's digest, and since a segment's audio is keyed by its spoken text, changing one entry re-renders exactly the
segments whose text it changes. The file:

    # comments and blank lines are ignored
    Dana = Déina                  whole words, any case: "Dana", "DANA", "dana"
    Sr. = señor                   punctuation is part of the written form
    case: US = Estados Unidos     case-sensitive ("us" is left alone)
    re: \\bcap\\.\\s*(\\d+) = capítulo \\1   a regular expression (Python syntax), only where asked for

The separator is `` = `` (spaces around the sign). Plain entries match whole words only (never inside a longer word),
longest first, so ``Dr. Smith`` wins over ``Dr.``. Regular expressions run after them, in file order. A malformed line
stops ``enqueue`` before anything is published, with the file, the line and what to write instead.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SEPARATOR = " = "


class LexiconError(ValueError):
    """The lexicon file cannot be read as written; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Lexicon:
    plain: tuple[tuple[str, str, bool], ...] = ()  # (written, spoken, case-sensitive)
    patterns: tuple[tuple[re.Pattern[str], str], ...] = ()
    digest: str = ""
    _compiled: dict[bool, tuple[re.Pattern[str], dict[str, str]]] = field(default_factory=dict, compare=False,
                                                                          repr=False)

    def __post_init__(self) -> None:
        for sensitive in (False, True):
            entries = [(w, s) for w, s, case in self.plain if case == sensitive]
            if not entries:
                continue
            ordered = sorted(entries, key=lambda item: -len(item[0]))
            alternation = "|".join(re.escape(written) for written, _ in ordered)
            pattern = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", 0 if sensitive else re.IGNORECASE)
            table = {(w if sensitive else w.casefold()): s for w, s in ordered}
            self._compiled[sensitive] = (pattern, table)

    def __bool__(self) -> bool:
        return bool(self.plain or self.patterns)

    def apply(self, text: str) -> str:
        for sensitive, (pattern, table) in sorted(self._compiled.items()):
            text = pattern.sub(_replacer(table, sensitive), text)
        for pattern, replacement in self.patterns:
            text = pattern.sub(replacement, text)
        return text


def _replacer(table: dict[str, str], sensitive: bool) -> Callable[[re.Match[str]], str]:
    """The spoken form of a match, looked up as written (case-sensitive entries) or casefolded."""
    def spoken(match: re.Match[str]) -> str:
        return table[match.group(0) if sensitive else match.group(0).casefold()]

    return spoken


def parse_lexicon(text: str, where: str = "the lexicon") -> Lexicon:
    plain: list[tuple[str, str, bool]] = []
    patterns: list[tuple[re.Pattern[str], str]] = []
    canonical: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if SEPARATOR not in stripped:
            raise LexiconError(f"{where}:{number}: {stripped[:60]!r} has no ' = ' between the written and the spoken "
                               "form; write it as `written = spoken` (spaces around the sign)")
        written, spoken = (part.strip() for part in stripped.split(SEPARATOR, 1))
        kind, sep, rest = written.partition(":")
        kind = kind.strip().lower() if sep else ""
        if kind in ("re", "case"):
            written = rest.strip()
        else:
            kind = ""
        if not written or not spoken:
            raise LexiconError(f"{where}:{number}: both sides of ' = ' must be filled (written = spoken)")
        if kind == "re":
            try:
                pattern = re.compile(written)
                pattern.sub(spoken, "")  # a bad group reference in the replacement fails here, not mid-book
            except re.error as exc:
                raise LexiconError(f"{where}:{number}: the regular expression {written!r} is not valid ({exc}); "
                                   "check its brackets and escapes, or drop `re:` to match the words as written"
                                   ) from None
            patterns.append((pattern, spoken))
        else:
            plain.append((written, spoken, kind == "case"))
        canonical.append(f"{kind}\t{written}\t{spoken}")
    digest = hashlib.sha256("\n".join(canonical).encode("utf-8")).hexdigest()
    return Lexicon(tuple(plain), tuple(patterns), digest if canonical else "")


def load_lexicon(path: Path) -> Lexicon:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LexiconError(f"{path}: no such lexicon file") from None
    except UnicodeDecodeError as exc:
        raise LexiconError(f"{path}: not UTF-8 text (byte {exc.start}); save the lexicon as UTF-8") from None
    return parse_lexicon(text, str(path))
