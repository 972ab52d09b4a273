"""WAV encoding and inspection (torch-free): 16-bit PCM, mono, as the worker stores segments."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf


def encode_wav(waveform: np.ndarray, sample_rate: int) -> bytes:
    """PCM_16 WAV bytes. Samples are clipped to [-1, 1] first so that loud noise cannot wrap around."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(waveform, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@dataclass(frozen=True)
class WavInfo:
    frames: int
    sample_rate: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def wav_info(data: bytes) -> WavInfo:
    info = sf.info(io.BytesIO(data))
    return WavInfo(frames=int(info.frames), sample_rate=int(info.samplerate), channels=int(info.channels))
