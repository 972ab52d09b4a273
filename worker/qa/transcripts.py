"""Transcribing a reference clip that came without its words, as upstream does for an empty ``ref_text``: with the
recogniser the quality gate is configured with, built the first time a clip needs it (not at every command)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import soundfile as sf

from worker.qa.asr import ASROptions, Clip, make_recognizer


def reference_transcriber(qa: Any, language: str = "en") -> Callable[[bytes, str], str]:
    """A function from clip bytes (and where they come from, for errors) to their transcript."""
    built: list[Any] = []

    def transcribe(data: bytes, where: str) -> str:
        if not built:
            built.append(make_recognizer(qa.asr, ASROptions(device=qa.device, compute_type=qa.compute_type,
                                                            cpu_threads=qa.cpu_threads,
                                                            local_files_only=not qa.download)))
        recognizer = built[0]
        if not recognizer.supports(language):
            raise ValueError(f"{where}: the recogniser {recognizer.name} does not know {language!r}; give the "
                             "clip's transcript, or use faster-whisper (F5_QA_ASR=faster-whisper:MODEL)")
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return str(recognizer.transcribe([Clip(samples.mean(axis=1), int(rate), language)])[0])

    return transcribe
