"""Upstream F5-TTS speech rules, kept exactly so that our audio matches upstream's for the same input.

Pure Python (no torch), and written once: the engine applies them to synthesise, and the producer applies the same
ones to size segments and plan batches without a GPU stack. Each rule corresponds to a behaviour of
``f5_tts.infer.utils_infer`` (version 1.1.x), including its quirks, which are documented where they look surprising.
"""

from __future__ import annotations

import re

from worker.constants import HOP_LENGTH, SAMPLE_RATE

# Upstream plans a chunk so that reference plus generated speech stays under ~22 s.
CHUNK_SECONDS = 22.0
# Upstream clips a reference to at most 12 s (at a silence when it can); chunk sizes are planned from that length.
REFERENCE_CLIP_SECONDS = 12.0
# Shorter references carry too little voice to imitate; longer than this leaves no room under CHUNK_SECONDS.
MIN_REFERENCE_SECONDS = 0.5
MAX_PLANNING_SECONDS = 20.0
# The longest clip accepted as a reference by default (upstream uses at most 12 s of it).
DEFAULT_MAX_REFERENCE_SECONDS = 60.0
# Upstream slows texts shorter than this many UTF-8 bytes to speed 0.3, so a lone word is not swallowed.
SHORT_TEXT_BYTES = 10
SHORT_TEXT_SPEED = 0.3
CROSS_FADE_SECONDS = 0.15
TARGET_RMS = 0.1

_SENTENCE_BREAK = re.compile(r"(?<=[;:,.!?])\s+|(?<=[；：，。！？])")


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def _ends_single_byte(text: str) -> bool:
    return bool(text) and utf8_len(text[-1]) == 1


def reference_text(ref_text: str) -> str:
    """The reference transcript as upstream's ``preprocess_ref_audio_text`` leaves it: ending in '. ' (or '。')."""
    if ref_text.endswith(". ") or ref_text.endswith("。"):
        return ref_text
    return ref_text + (" " if ref_text.endswith(".") else ". ")


def model_reference_text(ref_text: str) -> str:
    """The transcript as the model sees it: upstream appends one more space when the last character is one byte."""
    text = reference_text(ref_text)
    return text + " " if _ends_single_byte(text) else text


def max_chars_for_reference(ref_text: str, ref_seconds: float, speed: float = 1.0) -> int:
    """Upstream's chunk size: the reference's bytes-per-second rate times the time left under 22 s, times speed."""
    if ref_seconds <= 0:
        raise ValueError("reference duration must be positive")
    return int(utf8_len(reference_text(ref_text)) / ref_seconds * (CHUNK_SECONDS - ref_seconds) * speed)


def chunk_text(text: str, max_chars: int) -> list[str]:
    """Split text at punctuation into chunks of at most ``max_chars`` UTF-8 bytes, packed greedily (upstream rule).

    A sentence longer than ``max_chars`` becomes a chunk of its own, as upstream does; the producer keeps segments
    below the limit so that this stays rare.
    """
    chunks: list[str] = []
    current = ""
    for sentence in _SENTENCE_BREAK.split(text):
        if not sentence:
            continue
        spaced = sentence + " " if _ends_single_byte(sentence) else sentence
        if utf8_len(current) + utf8_len(sentence) <= max_chars:
            current += spaced
            continue
        if current:
            chunks.append(current.strip())
        current = spaced
    if current:
        chunks.append(current.strip())
    return chunks


def planned_frames(ref_frames: int, model_ref_text: str, gen_text: str, speed: float) -> int:
    """Total mel frames (reference plus generated) for one chunk: upstream's duration rule.

    ``ref_frames`` is ``samples // hop``; ``model_ref_text`` is the transcript after :func:`model_reference_text`.
    """
    gen_bytes = utf8_len(gen_text)
    local_speed = SHORT_TEXT_SPEED if gen_bytes < SHORT_TEXT_BYTES else speed
    return ref_frames + int(ref_frames / utf8_len(model_ref_text) * gen_bytes / local_speed)


def planning_seconds(clip_seconds: float) -> float:
    """The reference length that chunk sizes are planned from: the clip as upstream's preprocessing leaves it."""
    return min(clip_seconds, REFERENCE_CLIP_SECONDS)


def estimated_frames(ref_seconds: float, ref_text: str, text: str, speed: float) -> int:
    """Total frames one segment will need, from the reference's length alone (before the clip is decoded): what the
    producer plans batches with. The engine computes the same rule from the decoded clip."""
    ref_frames = int(ref_seconds * SAMPLE_RATE) // HOP_LENGTH
    return planned_frames(ref_frames, model_reference_text(ref_text), text, speed)
