"""The speech level of each voice, and a take's signal checks against it.

F5-TTS scales its output to the reference's level, so a take far louder or quieter than its voice went wrong. The
level is measured once per clip (by digest) and kept, a few dozen voices at most.
"""

from __future__ import annotations

import io
import threading
from typing import Any

import numpy as np
import soundfile as sf
from cachetools import LRUCache

from worker.qa.signal import SignalLimits, SignalReport, check_signal, speech_dbfs


def clip_level(data: bytes) -> float | None:
    """The speech level (dBFS) of an encoded clip, or None when it cannot be read."""
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception:
        return None
    return speech_dbfs(samples.mean(axis=1), int(rate))


class VoiceLevels:
    """Voice levels by clip digest, shared by the threads that check takes."""

    def __init__(self, size: int = 64) -> None:
        self._levels: LRUCache[str, float | None] = LRUCache(maxsize=size)
        self._lock = threading.Lock()

    def level(self, sha256: str, data: bytes) -> float | None:
        with self._lock:
            if sha256 in self._levels:
                return self._levels[sha256]
        level = clip_level(data)
        with self._lock:
            self._levels[sha256] = level
        return level

    def signal(self, job: Any, clip: Any, samples: np.ndarray, rate: int,
               limits: SignalLimits | None = None) -> SignalReport:
        """A take's signal checks, its loudness compared with its voice's."""
        return check_signal(samples, rate, limits, self.level(clip.sha256, clip.data))
