"""Why a take failed: a machine code for the tasks, the CLI and the review page to count and filter on, and words for
the person reading it. Every check in ``worker.qa`` reports through :class:`Reason`, so one list explains a verdict."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["Reason", "ReasonCode"]

ReasonCode = Literal[
    "empty",             # no samples at all
    "non_finite",        # NaN or ±inf samples: the model diverged; nothing else was measured
    "all_zero",          # digital silence
    "no_speech",         # samples, but no frame loud enough to be speech
    "clipping",          # too many samples at full scale
    "leading_silence",   # speech starts too late
    "trailing_silence",  # speech ends too early
    "internal_silence",  # a pause inside the take longer than a narrator's
    "loudness",          # speech much louder or quieter than the voice's reference clip
    "noise",             # the "speech" has the flat spectrum of noise, not the peaks of a voice
    "no_transcript",     # the recogniser heard nothing
    "high_cer",          # the recogniser heard something else than the segment's text
]


class Reason(BaseModel):
    """One failed check."""

    model_config = ConfigDict(frozen=True)

    code: ReasonCode
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
