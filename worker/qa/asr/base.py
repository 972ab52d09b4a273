"""The recogniser seam: what a backend takes (clips), what it gives (one transcript per clip), how it is configured,
and the one error a backend raises when it cannot run at all.

Backends raise :class:`ASRUnavailable` from their constructor, never from :meth:`Recognizer.transcribe`: a QA worker
builds its recogniser at start-up and fails there, with the fix in the message, instead of failing every segment.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ASR_RATE", "INSTALL_HINT", "ASROptions", "ASRUnavailable", "Clip", "Recognizer", "UnsupportedLanguage",
           "base_language",
           "check_resampler", "resample_16k"]

log = logging.getLogger(__name__)

ASR_RATE = 16_000  # what both backends' acoustic models were trained on
INSTALL_HINT = "pip install 'f5-batch[qa]'"


class ASRUnavailable(RuntimeError):
    """A recogniser cannot be built: its package is missing or its model cannot be loaded. The message names the fix."""


class UnsupportedLanguage(ValueError):
    """A clip's language is one the recogniser's model does not know (check :meth:`Recognizer.supports` first)."""


@dataclass(frozen=True)
class Clip:
    """One take to transcribe."""

    samples: npt.NDArray[np.float32]  # mono, in [-1, 1]
    rate: int  # samples per second of ``samples``; backends resample to what their model needs
    language: str  # the segment's language: "es", "en", "pt-BR"...

    @property
    def duration_s(self) -> float:
        return self.samples.shape[0] / self.rate if self.rate else 0.0


@runtime_checkable
class Recognizer(Protocol):
    """Speech to text, a batch at a time."""

    @property
    def name(self) -> str:
        """The backend and model, e.g. ``faster-whisper:large-v3``; recorded with every verdict."""
        ...

    def supports(self, language: str) -> bool:
        """Whether clips in ``language`` can be transcribed (otherwise :meth:`transcribe` raises
        :class:`UnsupportedLanguage`): a QA task skips intelligibility for them instead of failing the take."""
        ...

    def transcribe(self, clips: Sequence[Clip]) -> list[str]:
        """One transcript per clip, in order; "" where nothing was heard."""
        ...


class ASROptions(BaseModel):
    """How a recogniser runs. Each backend uses the options that apply to it and ignores the rest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = "default"  # CTranslate2's: default, int8, float16, int8_float16...
    # Greedy decoding: TTS output is clean, read speech, where a beam buys little accuracy for its cost on a CPU.
    beam_size: int = Field(default=1, ge=1, le=16)
    cpu_threads: int = Field(default=0, ge=0)  # 0: the backend's default (CTranslate2: 4, or OMP_NUM_THREADS)
    batch_size: int = Field(default=8, ge=1, le=256)  # clips decoded together (faster-whisper)
    local_files_only: bool = False  # never download a model; only look in the local cache
    download_root: str | None = None  # where downloaded models go (default: the Hugging Face cache)
    vad_filter: bool = False  # cut non-speech before decoding (faster-whisper's Silero VAD)
    # Decoding stops at this many tokens per second of audio (plus a few), so a model that never emits its end token
    # (random weights, or a hallucination loop) costs what a real transcript of that length would, not 448 tokens.
    # Read speech runs at 2-4 tokens per second in Whisper's vocabulary; 8 leaves room for slow, token-hungry text.
    max_tokens_per_second: float = Field(default=8.0, gt=0, le=50)
    min_new_tokens: int = Field(default=16, ge=0, le=224)  # ...plus this many, so a couple of words always fit
    # Languages a custom pocketsphinx model serves (None: any); the bundled model serves "en" only.
    languages: tuple[str, ...] | None = None


def base_language(language: str) -> str:
    """``es-ES`` → ``es``, ``pt_BR`` → ``pt``: recognisers know languages, not locales."""
    return language.replace("_", "-").split("-")[0].lower()


def resample_16k(samples: npt.ArrayLike, rate: int) -> npt.NDArray[np.float32]:
    """Mono float32 at :data:`ASR_RATE`, band-limited (soxr when installed, else scipy's polyphase filter)."""
    array = np.asarray(samples, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"a clip must be mono (1-D), got shape {array.shape}")
    if rate == ASR_RATE or array.size == 0:
        return array
    if importlib.util.find_spec("soxr") is not None:
        import soxr

        return np.asarray(soxr.resample(array, rate, ASR_RATE), dtype=np.float32)
    from math import gcd

    from scipy.signal import resample_poly

    step = gcd(rate, ASR_RATE)
    return np.asarray(resample_poly(array, ASR_RATE // step, rate // step), dtype=np.float32)


def check_resampler() -> None:
    """Raise :class:`ASRUnavailable` unless :func:`resample_16k` has a library to work with (soxr or scipy)."""
    if importlib.util.find_spec("soxr") is None and importlib.util.find_spec("scipy") is None:
        raise ASRUnavailable(f"no resampler: install soxr ({INSTALL_HINT} brings it)")
