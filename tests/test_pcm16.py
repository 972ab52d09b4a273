"""16-bit conversion: the worker's numpy path and the engine's on-device path give libsndfile's samples exactly."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import torch

from worker.audio import to_pcm16
from worker.engine.engine import pcm16_samples

EDGES = np.array([-2.0, -1.0, -0.99999994, -3.0517578e-05, -1e-9, 0.0, 1e-9, 3.0517578e-05, 0.49999997, 0.5,
                  0.99996948, 0.99999994, 1.0, 1.5], dtype=np.float32)


def _libsndfile(wave: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    sf.write(buffer, wave, 24000, subtype="PCM_16", format="WAV")
    buffer.seek(0)
    samples, _ = sf.read(buffer, dtype="int16")
    return samples


def test_float32_audio_becomes_libsndfiles_samples_on_either_path():
    rng = np.random.default_rng(7)
    noise = rng.standard_normal(48000).astype(np.float32) * 0.5
    for wave in (EDGES, noise, rng.uniform(-1, 1, 48000).astype(np.float32)):
        expected = _libsndfile(wave)
        assert np.array_equal(to_pcm16(wave), expected)
        assert np.array_equal(pcm16_samples(torch.from_numpy(wave.copy())).numpy(), expected)


def test_float64_audio_keeps_its_own_rounding():
    wave = np.array([0.49999999999, -0.49999999999, 0.7], dtype=np.float64)
    assert to_pcm16(wave).tolist() == [16383, -16384, 22937]
