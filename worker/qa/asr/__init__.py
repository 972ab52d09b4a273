"""Speech recognisers for the intelligibility check, chosen by a spec string from a small alias table.

A spec is ``BACKEND`` or ``BACKEND:MODEL``: ``pocketsphinx`` (the bundled English model), ``pocketsphinx:/models/es``,
``faster-whisper`` (large-v3), ``faster-whisper:large-v3-turbo``, ``faster-whisper:/models/whisper-ct2``. Backends
are imported when chosen, so importing this package costs nothing and needs neither pocketsphinx nor faster-whisper.
"""

from __future__ import annotations

import importlib

from worker.qa.asr.base import (
    ASROptions,
    ASRUnavailable,
    Clip,
    Recognizer,
    UnsupportedLanguage,
)

__all__ = ["BACKENDS", "ASROptions", "ASRUnavailable", "Clip", "Recognizer", "UnsupportedLanguage", "make_recognizer",
           "parse_spec"]

# Backend name → "module:class". The class takes (model: str | None, options: ASROptions).
BACKENDS: dict[str, str] = {
    "pocketsphinx": "worker.qa.asr.pocketsphinx:PocketSphinxRecognizer",
    "faster-whisper": "worker.qa.asr.faster_whisper:FasterWhisperRecognizer",
    "whisper": "worker.qa.asr.faster_whisper:FasterWhisperRecognizer",
}


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"faster-whisper:large-v3"`` → ``("faster-whisper", "large-v3")``; the model may itself hold colons."""
    backend, _, model = spec.strip().partition(":")
    backend = backend.strip().lower().replace("_", "-")
    if backend not in BACKENDS:
        raise ValueError(f"unknown ASR backend {backend!r} in {spec!r}; known: {', '.join(sorted(BACKENDS))}")
    return backend, (model.strip() or None)


def make_recognizer(spec: str, options: ASROptions | None = None) -> Recognizer:
    """Build the recogniser ``spec`` names, loading its model now. Raises :class:`ASRUnavailable` (with the fix in
    the message) when its package is missing or its model cannot be loaded, and ValueError for an unknown backend."""
    backend, model = parse_spec(spec)
    module_name, _, class_name = BACKENDS[backend].partition(":")
    recognizer: Recognizer = getattr(importlib.import_module(module_name), class_name)(model, options or ASROptions())
    return recognizer
