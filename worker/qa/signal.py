"""Signal checks: what can be told about a take from its samples alone, in milliseconds, without a recogniser.

They catch the failures that need no listening: a diverged model (NaN, silence, noise at full scale or where a voice
should be), a take that starts or ends with seconds of nothing, a pause in the middle where words went missing, and
speech far louder or quieter than the voice it imitates. Numpy only, so that every worker can run them on every segment.

Speech is found by energy in 20 ms frames. A frame is *voiced* when its RMS level is above both an absolute floor
(``silence_floor_dbfs``) and a floor relative to the take's own loud frames (``silence_below_speech_db`` under the
95th percentile), so that a quiet voice and a loud one are cut at the same place relative to their speech, and room
tone or vocoder hiss counts as silence. Voiced runs shorter than ``min_speech_s`` (clicks) do not count as speech.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from worker.qa.reasons import Reason, ReasonCode

__all__ = ["SignalLimits", "SignalReport", "check_signal", "speech_dbfs"]

log = logging.getLogger(__name__)

_TINY = 1e-20  # power floor, so that log10 of digital silence is finite


class SignalLimits(BaseModel):
    """Bounds for a narrated segment. The defaults suit book narration: a narrator takes a breath before speaking
    (under a second), may let a sentence ring out (1.5 s), and pauses at most about two seconds inside a segment; a
    longer pause in F5-TTS output is almost always a skipped stretch of text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_leading_silence_s: float = Field(default=1.0, ge=0)
    max_trailing_silence_s: float = Field(default=1.5, ge=0)
    max_internal_silence_s: float = Field(default=2.0, gt=0)
    clip_level: float = Field(default=0.999, gt=0, le=1)  # |sample| at or above this counts as clipped
    max_clipped_share: float = Field(default=0.001, ge=0, le=1)  # share of samples allowed at clip_level
    max_loudness_deviation_db: float = Field(default=10.0, gt=0)  # speech level vs the voice's, either way
    silence_floor_dbfs: float = Field(default=-55.0, le=0)  # frames below this level are silence, always
    silence_below_speech_db: float = Field(default=35.0, gt=0)  # ...and so are frames this far under the loud ones
    frame_s: float = Field(default=0.02, gt=0, le=0.2)
    min_speech_s: float = Field(default=0.06, ge=0)  # shorter voiced runs (clicks, breaths) are not speech
    # Median over voiced frames: speech measures 0.0005-0.003, red noise 0.06, white noise 0.56.
    max_spectral_flatness: float = Field(default=0.1, gt=0, le=1)


class SignalReport(BaseModel):
    """What was measured, and every limit it broke. Levels are dBFS (0 = full scale); None where there was nothing
    to measure (no samples, no speech)."""

    model_config = ConfigDict(frozen=True)

    duration_s: float
    peak_dbfs: float | None = None
    clipped_share: float = 0.0
    speech_dbfs: float | None = None  # RMS level of the voiced frames
    voice_dbfs: float | None = None  # the reference clip's speech level, when one was given
    leading_silence_s: float | None = None
    trailing_silence_s: float | None = None
    internal_silence_s: float | None = None  # the longest pause between speech runs
    spectral_flatness: float | None = None  # median over voiced frames: near 0 for a voice, near 0.56 for white noise
    reasons: tuple[Reason, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.reasons


def _mono(samples: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Float samples in [-1, 1]; integer PCM is scaled, and (frames, channels) arrays are averaged to one channel."""
    array = np.asarray(samples)
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float64) / float(np.iinfo(array.dtype).max)
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 2:
        array = array.mean(axis=1)
    if array.ndim != 1:
        raise ValueError(f"samples must be 1-D (mono) or 2-D (frames, channels), got shape {array.shape}")
    return array


def _frame_levels(samples: npt.NDArray[np.float64], frame: int) -> npt.NDArray[np.float64]:
    """dBFS RMS of each frame (the last one zero-padded)."""
    count = -(-samples.size // frame)
    padded = np.zeros(count * frame)
    padded[: samples.size] = samples
    power = np.mean(padded.reshape(count, frame) ** 2, axis=1)
    return np.asarray(10.0 * np.log10(power + _TINY))


def _speech_runs(levels: npt.NDArray[np.float64], limits: SignalLimits) -> list[tuple[int, int]]:
    """[start, end) frame ranges of speech."""
    if levels.size == 0:
        return []
    threshold = max(limits.silence_floor_dbfs, float(np.percentile(levels, 95)) - limits.silence_below_speech_db)
    voiced = np.concatenate(([False], levels >= threshold, [False]))
    edges = np.flatnonzero(np.diff(voiced.astype(np.int8)))
    shortest = max(1, round(limits.min_speech_s / limits.frame_s))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= shortest]


def _flatness(samples: npt.NDArray[np.float64], frame: int, runs: list[tuple[int, int]]) -> float:
    """Median spectral flatness (geometric over arithmetic mean of the power spectrum) of the voiced frames.

    A voice concentrates its energy in harmonics and formants (flatness near 0); noise spreads it evenly (white noise
    near 0.56 with a Hann window). A diverged model that "speaks" noise at a speaking level passes every energy check,
    and fails this one.
    """
    index = np.concatenate([np.arange(a, b) for a, b in runs])
    index = index[(index + 1) * frame <= samples.size]  # whole frames only
    if index.size == 0:
        return 0.0
    frames = samples[: (int(index.max()) + 1) * frame].reshape(-1, frame)[index] * np.hanning(frame)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + _TINY
    flatness = np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)
    return float(np.median(flatness))


def _level(power: float) -> float:
    return float(10.0 * np.log10(power + _TINY))


def speech_dbfs(samples: npt.ArrayLike, rate: int, limits: SignalLimits | None = None) -> float | None:
    """The RMS level of the speech in ``samples`` (voiced frames only), in dBFS; None when nothing sounds like speech.

    Measure the voice's reference clip with this once, and pass the value to :func:`check_signal` for each take.
    """
    limits = limits or SignalLimits()
    mono = _mono(samples)
    if mono.size == 0 or not np.all(np.isfinite(mono)):
        return None
    frame = max(1, round(limits.frame_s * rate))
    levels = _frame_levels(mono, frame)
    runs = _speech_runs(levels, limits)
    if not runs:
        return None
    voiced = np.concatenate([levels[a:b] for a, b in runs])
    return _level(float(np.mean(10.0 ** (voiced / 10.0))))


def check_signal(samples: npt.ArrayLike, rate: int, limits: SignalLimits | None = None,
                 voice_dbfs: float | None = None) -> SignalReport:
    """Measure one take and list every limit it breaks (an empty list: it passed).

    ``samples``: mono floats in [-1, 1] (integer PCM and (frames, channels) arrays are accepted); ``voice_dbfs``: the
    speech level of the voice's reference clip (:func:`speech_dbfs`), to catch takes far louder or quieter than it.
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    limits = limits or SignalLimits()
    mono = _mono(samples)
    duration = mono.size / rate
    if mono.size == 0:
        return SignalReport(duration_s=0.0, voice_dbfs=voice_dbfs,
                            reasons=(Reason(code="empty", message="no samples"),))
    finite = np.isfinite(mono)
    if not finite.all():
        bad = int(mono.size - finite.sum())
        return SignalReport(duration_s=duration, voice_dbfs=voice_dbfs, reasons=(
            Reason(code="non_finite", message=f"{bad} of {mono.size} samples are NaN or infinite"),))
    peak = float(np.max(np.abs(mono)))
    if peak == 0.0:
        return SignalReport(duration_s=duration, voice_dbfs=voice_dbfs, reasons=(
            Reason(code="all_zero", message=f"all {mono.size} samples are zero"),))

    frame = max(1, round(limits.frame_s * rate))
    frame_s = frame / rate
    levels = _frame_levels(mono, frame)
    runs = _speech_runs(levels, limits)
    clipped = float(np.mean(np.abs(mono) >= limits.clip_level))
    measured: dict[str, Any] = {"peak_dbfs": 20.0 * float(np.log10(peak)), "clipped_share": clipped}
    reasons: list[Reason] = []
    if clipped > limits.max_clipped_share:
        reasons.append(Reason(code="clipping", message=(
            f"{clipped:.2%} of samples at full scale (limit {limits.max_clipped_share:.2%})")))
    if not runs:
        reasons.append(Reason(code="no_speech", message=(
            f"no frame above {limits.silence_floor_dbfs:g} dBFS for {limits.min_speech_s:g} s; "
            f"peak {measured['peak_dbfs']:.1f} dBFS")))
        return SignalReport(duration_s=duration, voice_dbfs=voice_dbfs, reasons=tuple(reasons), **measured)

    leading = runs[0][0] * frame_s
    trailing = max(0.0, duration - runs[-1][1] * frame_s)
    internal = max((b[0] - a[1] for a, b in itertools.pairwise(runs)), default=0) * frame_s
    voiced = np.concatenate([levels[a:b] for a, b in runs])
    speech = _level(float(np.mean(10.0 ** (voiced / 10.0))))
    flatness = _flatness(mono, frame, runs)
    measured.update(speech_dbfs=speech, leading_silence_s=leading, trailing_silence_s=trailing,
                    internal_silence_s=internal, spectral_flatness=flatness)
    if flatness > limits.max_spectral_flatness:
        reasons.append(Reason(code="noise", message=(
            f"spectral flatness {flatness:.3f} (limit {limits.max_spectral_flatness:g}): noise, not a voice")))
    silences: tuple[tuple[ReasonCode, float, float], ...] = (
        ("leading_silence", leading, limits.max_leading_silence_s),
        ("trailing_silence", trailing, limits.max_trailing_silence_s),
        ("internal_silence", internal, limits.max_internal_silence_s))
    for code, value, limit in silences:
        if value > limit:
            words = code.replace("_", " ")
            reasons.append(Reason(code=code, message=f"{words} {value:.2f} s (limit {limit:g} s)"))
    if voice_dbfs is not None and abs(speech - voice_dbfs) > limits.max_loudness_deviation_db:
        side = "louder" if speech > voice_dbfs else "quieter"
        reasons.append(Reason(code="loudness", message=(
            f"speech at {speech:.1f} dBFS is {abs(speech - voice_dbfs):.1f} dB {side} than the voice's "
            f"{voice_dbfs:.1f} dBFS (limit ±{limits.max_loudness_deviation_db:g} dB)")))
    log.debug("signal: %.2f s, speech %.1f dBFS, lead %.2f s, trail %.2f s, pause %.2f s, %d reasons",
              duration, speech, leading, trailing, internal, len(reasons))
    return SignalReport(duration_s=duration, voice_dbfs=voice_dbfs, reasons=tuple(reasons), **measured)
