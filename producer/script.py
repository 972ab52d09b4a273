"""A book as a script: which voice speaks each stretch of a paragraph, and where the text asks for a pause.

Pure text, no I/O. A paragraph's raw text is cut into :class:`Run` pieces whose concatenation is the raw text exactly
(the markup included), so the round trip of the whole book stays exact; each run says what is spoken, by whom, and the
pause that follows it. Three sources of structure:

- **Voice tags**, upstream ``f5-tts_infer-cli``'s ``[NAME]``: the voice switches at the tag and stays until the next
  one, across paragraphs. Only read when the book has voices to switch to (``--voices`` or ``--tags``), so a novel's
  ``[sic]`` or ``[1]`` is left alone otherwise. An unknown name is an error unless a fallback voice is given.
- **Pauses**: ``[pause]`` (1 s) and ``[pause 1.5s]`` anywhere in the text, and scene breaks (a paragraph that is only
  ``* * *``, ``***``, ``#`` or dashes). They become silence in assembly and are never spoken.
- **Dialogue** (``--dialogue-voice``): quoted speech in another voice than the narration. The rules, and their limits:

  * Spanish dashes: a paragraph that opens with a dash (``—``, ``―`` or ``–``) is speech; each later dash toggles
    between speech and the narrator's aside (``—¿Quién es? —dijo Sancho—. No lo sé.``: speech, ``dijo Sancho.``,
    speech). The punctuation right after a closing dash belongs to the aside. A dash inside narration (``su lugar
    —que era hombre docto—``) is left alone: only paragraphs that open with a dash are dialogue.
  * ``« »`` and ``“ ”`` (and straight double quotes, paired in order): what is inside is speech.
  * Not handled: single quotes (indistinguishable from apostrophes), dialogue that spans paragraphs without a dash or
    quote at each one, and speech that names its speaker (every speech run gets the one dialogue voice).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

DEFAULT_PAUSE_S = 1.0
MAX_PAUSE_S = 60.0
VOICE_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"

_PAUSE = re.compile(r"\[pause(?:\s+(\d+(?:\.\d+)?)\s*s?)?\s*\]", re.IGNORECASE)
_TAG = re.compile(rf"\[({VOICE_NAME})\]")
_SCENE_BREAK = re.compile(r"^\s*(?:(?:\*\s*){3,}|#|[—―–-]{1,}|(?:~\s*){3,})\s*$")
_DASHES = "—―–"
_QUOTES = {"«": "»", "“": "”", '"': '"'}
_AFTER_CLOSING_DASH = re.compile(r"^[.,;:]+")


class ScriptError(ValueError):
    """The text's markup cannot be followed; the message says where and what to do."""


@dataclass(frozen=True)
class Run:
    """A stretch of one paragraph: its exact source text, what is spoken of it, by whom, and the pause after it."""

    raw: str  # exact source, markup included
    spoken: str  # the raw text without markup: what the segmenter cuts and the voice reads
    voice: str  # the voice's name in the book's cast
    pause_after_s: float | None = None  # silence after this run (a [pause] or a scene break), beyond the usual
    dashed: bool = False  # a piece of dash dialogue: its dashes mark who speaks, and are not read

    @property
    def speakable(self) -> bool:
        return bool(self.spoken.strip())


@dataclass
class Cast:
    """How voices are chosen while reading: the narrator, the voices tags may name, the dialogue voice."""

    narrator: str
    known: frozenset[str] = frozenset()
    tags: bool = False  # read [NAME] tags
    dialogue: str | None = None
    unknown_falls_back_to: str | None = None  # explicit: upstream falls back to "main" silently; we refuse by default

    def voice_for_tag(self, name: str, where: str) -> str:
        if name in self.known:
            return name
        if self.unknown_falls_back_to is not None:
            return self.unknown_falls_back_to
        names = ", ".join(sorted(self.known)) or "none"
        raise ScriptError(f"{where}: the voice tag [{name}] names no voice of this book (known: {names}). Add it to "
                          f"the voice map (--voices), add it with `f5-batch voice add {name} CLIP --text …`, or pass "
                          "--unknown-voice NAME to read unknown tags in that voice")


def without_dialogue_dashes(text: str) -> str:
    """What a voice reads of a piece of dash dialogue: the dashes that open speech or an aside are not read."""
    text = re.sub(rf"\s*[{_DASHES}]\s*(?=[.,;:!?])", "", text)  # a closing dash before its punctuation
    return re.sub(rf"\s*[{_DASHES}]\s*", " ", text).strip()


def is_scene_break(raw: str) -> bool:
    return bool(raw.strip()) and bool(_SCENE_BREAK.match(raw.strip()))


def _pause_seconds(match: re.Match[str], where: str) -> float:
    seconds = float(match.group(1)) if match.group(1) else DEFAULT_PAUSE_S
    if seconds > MAX_PAUSE_S:
        raise ScriptError(f"{where}: {match.group(0)} asks for {seconds:g} s; at most {MAX_PAUSE_S:g} s")
    return seconds


class ScriptReader:
    """Reads paragraphs in order; keeps the current voice from one paragraph to the next."""

    def __init__(self, cast: Cast) -> None:
        self.cast = cast
        self.voice = cast.narrator

    def runs(self, raw: str, where: str = "the text") -> list[Run]:
        """The runs of one paragraph, in order; their ``raw`` fields concatenate to ``raw``."""
        runs: list[Run] = []
        position = 0
        pattern = re.compile(f"{_PAUSE.pattern}|{_TAG.pattern}" if self.cast.tags else _PAUSE.pattern, re.IGNORECASE)
        for match in pattern.finditer(raw):
            runs.extend(self._speech_runs(raw[position : match.start()], self.voice))
            token = match.group(0)
            if token.lower().startswith("[pause") and (pause_match := _PAUSE.fullmatch(token)):
                pause = _pause_seconds(pause_match, where)
                runs.append(Run(token, "", self.voice, pause))
            else:
                self.voice = self.cast.voice_for_tag(match.group(match.lastindex or 1), where)
                runs.append(Run(token, "", self.voice))
            position = match.end()
        runs.extend(self._speech_runs(raw[position:], self.voice))
        return _merged(runs)

    def _speech_runs(self, text: str, narrator: str) -> list[Run]:
        if not text:
            return []
        if self.cast.dialogue is None:
            return [Run(text, text, narrator)]
        dashed = text.lstrip()[:1] in _DASHES
        return [Run(piece, piece, self.cast.dialogue if speech else narrator, dashed=dashed)
                for piece, speech in split_dialogue(text) if piece]


def _merged(runs: list[Run]) -> list[Run]:
    """Markup-only runs folded into their neighbours: a pause joins the run before it (its silence follows that run),
    a tag the run after it; consecutive runs of one voice with no pause between them join."""
    out: list[Run] = []
    carry = ""  # markup waiting for the next speakable run
    for run in runs:
        if run.speakable:
            if out and out[-1].voice == run.voice and out[-1].pause_after_s is None and not carry:
                out[-1] = replace(out[-1], raw=out[-1].raw + run.raw, spoken=out[-1].spoken + run.spoken,
                                  dashed=out[-1].dashed or run.dashed)
            else:
                out.append(replace(run, raw=carry + run.raw))
            carry = ""
        elif run.pause_after_s is not None and out and not carry:
            previous = out[-1]
            pause = (previous.pause_after_s or 0.0) + run.pause_after_s
            out[-1] = replace(previous, raw=previous.raw + run.raw, pause_after_s=pause)
        else:
            carry += run.raw
            if run.pause_after_s is not None:  # a pause before anything was said: kept, on a silent run
                out.append(Run(carry, "", run.voice, run.pause_after_s))
                carry = ""
    if carry:
        if out:
            out[-1] = replace(out[-1], raw=out[-1].raw + carry)
        else:
            out.append(Run(carry, "", runs[-1].voice if runs else ""))
    return out


def split_dialogue(text: str) -> list[tuple[str, bool]]:
    """(piece, is speech) in order; the pieces concatenate to ``text``."""
    stripped = text.lstrip()
    if stripped[:1] in _DASHES:
        return _dashed(text)
    return _quoted(text)


def _dashed(text: str) -> list[tuple[str, bool]]:
    pieces: list[tuple[str, bool]] = []
    lead = len(text) - len(text.lstrip())
    start = lead + 1  # past the opening dash
    opening = text[:start]
    speech = True
    for index in range(start, len(text)):
        if text[index] not in _DASHES:
            continue
        piece = text[start:index]
        if speech:
            pieces.append((opening + piece, True))
            opening = ""
            start = index
        else:  # a closing dash: it and the punctuation after it end the narrator's aside
            tail = _AFTER_CLOSING_DASH.match(text[index + 1 :])
            end = index + 1 + (tail.end() if tail else 0)
            pieces.append((text[start:end], False))
            start = end
        speech = not speech
    pieces.append((opening + text[start:], speech))
    return _without_empty_speech(pieces)


def _quoted(text: str) -> list[tuple[str, bool]]:
    pieces: list[tuple[str, bool]] = []
    start, index = 0, 0
    while index < len(text):
        closing = _QUOTES.get(text[index])
        end = text.find(closing, index + 1) if closing else -1
        if closing and end > index + 1:
            if index > start:
                pieces.append((text[start:index], False))
            pieces.append((text[index : end + 1], True))
            start = index = end + 1
            continue
        index += 1
    if start < len(text):
        pieces.append((text[start:], False))
    return _without_empty_speech(pieces)


def _without_empty_speech(pieces: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """A piece with nothing to speak (a dash and a space) joins its neighbour, so no voice gets an empty line."""
    out: list[tuple[str, bool]] = []
    for piece, speech in pieces:
        if out and (not any(char.isalnum() for char in piece) or out[-1][1] == speech):
            out[-1] = (out[-1][0] + piece, out[-1][1])
        elif not out and not any(char.isalnum() for char in piece):
            out.append((piece, speech))
        else:
            if out and not any(char.isalnum() for char in out[-1][0]):
                piece, speech = out.pop()[0] + piece, speech
            out.append((piece, speech))
    return out
