"""Transcribing a reference clip that came without its words (a voice map's empty ``ref_text``, ``voice add`` without
``--text``), as upstream does, with the speech recogniser the quality gate is configured with (``F5_QA_ASR``)."""

from __future__ import annotations

from typing import Any

from producer.cast import Transcriber


def configured_transcriber(settings: Any, language: str = "en") -> Transcriber | None:
    """A function from clip bytes to their transcript, or None when no recogniser is configured. The recogniser is
    built the first time a clip needs it."""
    if not settings.qa.asr:
        return None
    from worker.qa.transcripts import reference_transcriber

    return reference_transcriber(settings.qa, language)
