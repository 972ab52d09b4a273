"""Chapter audio written as a stream: formats, per-segment loudness, pauses and click-free edges.

A chapter is never held in memory whole: each segment is read, levelled, faded at its edges and appended to an open
``soundfile.SoundFile``, followed by its pause, so a 2-hour chapter needs memory for one segment at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

# name -> (libsndfile format, subtype, file extension)
FORMATS: dict[str, tuple[str, str, str]] = {
    "wav": ("WAV", "PCM_16", "wav"),
    "flac": ("FLAC", "PCM_16", "flac"),
    "ogg": ("OGG", "VORBIS", "ogg"),
    "opus": ("OGG", "OPUS", "opus"),
    "mp3": ("MP3", "MPEG_LAYER_III", "mp3"),
}
SILENCE_DBFS = -50.0


@dataclass(frozen=True)
class Levelling:
    """Every segment is brought to the same speech loudness, so the voice does not drift between segments."""

    target_dbfs: float = -20.0  # RMS of the voiced part of each segment
    max_gain_db: float = 12.0  # never amplify noise or a near-silent segment by more than this
    fade_s: float = 0.01  # fade in and out at every segment edge: no clicks where audio meets silence

    def apply(self, samples: np.ndarray, rate: int) -> np.ndarray:
        samples = samples.astype(np.float32, copy=True)
        if samples.size == 0:
            return samples
        frame = max(1, int(0.02 * rate))
        usable = samples[: samples.size // frame * frame].reshape(-1, frame) if samples.size >= frame else \
            samples.reshape(1, -1)
        energies = np.sqrt(np.mean(np.square(usable), axis=1) + 1e-12)
        voiced = energies[20 * np.log10(energies) > SILENCE_DBFS]
        if voiced.size:
            rms = float(np.sqrt(np.mean(np.square(voiced))))
            gain_db = np.clip(self.target_dbfs - 20 * np.log10(rms), -self.max_gain_db, self.max_gain_db)
            samples *= 10 ** (gain_db / 20)
        peak = float(np.abs(samples).max())
        if peak > 0.99:
            samples *= 0.99 / peak
        fade = min(int(self.fade_s * rate), samples.size // 2)
        if fade > 0:
            ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
            samples[:fade] *= ramp
            samples[-fade:] *= ramp[::-1]
        return samples


def open_writer(path: str | Path, fmt: str, rate: int, quality: float | None = None, constant_bitrate: bool = False
                ) -> sf.SoundFile:
    """A streaming writer. ``quality`` 0..1 (1 best) maps to libsndfile's compression level for FLAC, Vorbis,
    Opus and MP3; ``constant_bitrate`` picks CBR instead of VBR where the codec has both (MP3, Opus)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
    container, subtype, _ = FORMATS[fmt]
    options: dict[str, float | str] = {}
    if quality is not None and fmt != "wav":
        options["compression_level"] = min(1.0, max(0.0, 1.0 - quality))
    if constant_bitrate and fmt in ("mp3", "opus"):
        options["bitrate_mode"] = "CONSTANT"
    return sf.SoundFile(str(path), "w", samplerate=rate, channels=1, format=container, subtype=subtype, **options)


def silence(seconds: float, rate: int) -> np.ndarray:
    return np.zeros(round(seconds * rate), dtype=np.float32)
