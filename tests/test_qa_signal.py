"""Signal checks on real speech (F5-TTS's reference clips, espeak-ng) and on that speech broken in the ways a bad
render breaks it: padded, gapped, too quiet, clipped, NaN, silent, noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.qa_models import espeak, multi_clips, read_mono, ref_en
from worker.qa.signal import SignalLimits, check_signal, speech_dbfs

Audio = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def speech() -> tuple[Audio, int]:
    return read_mono(ref_en())


def _silence(seconds: float, rate: int, hiss_dbfs: float | None = None) -> Audio:
    if hiss_dbfs is None:
        return np.zeros(round(seconds * rate), dtype=np.float32)
    level = 10 ** (hiss_dbfs / 20)
    return (np.random.default_rng(1).normal(0, level, round(seconds * rate))).astype(np.float32)


def _codes(report: object) -> list[str]:
    return [r.code for r in report.reasons]  # type: ignore[attr-defined]


def test_real_speech_passes_and_is_measured(speech: tuple[Audio, int]) -> None:
    samples, rate = speech
    voice = speech_dbfs(samples, rate)
    assert voice is not None and -22 < voice < -12
    report = check_signal(samples, rate, voice_dbfs=voice)
    assert report.passed, report.reasons
    assert report.duration_s == pytest.approx(5.33, abs=0.01)
    assert report.leading_silence_s is not None and report.leading_silence_s < 0.3
    assert report.internal_silence_s is not None and report.internal_silence_s < 1.0
    assert report.spectral_flatness is not None and report.spectral_flatness < 0.02
    assert report.speech_dbfs == pytest.approx(voice)


@pytest.mark.parametrize("path", multi_clips(), ids=lambda p: p.name)
def test_other_voices_pass(path: Path) -> None:
    samples, rate = read_mono(path)
    assert check_signal(samples, rate).passed


def test_espeak_speech_passes(tmp_path: Path) -> None:
    try:
        samples, rate = espeak("The weather today is sunny with a light breeze from the west.", tmp_path)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    assert check_signal(samples, rate).passed


def test_a_long_pause_inside_fails(speech: tuple[Audio, int]) -> None:
    samples, rate = speech
    middle = samples.size // 2
    gapped = np.concatenate([samples[:middle], _silence(3.0, rate), samples[middle:]])
    report = check_signal(gapped, rate)
    assert _codes(report) == ["internal_silence"]
    assert report.internal_silence_s is not None and 3.0 <= report.internal_silence_s < 3.6
    assert "3." in report.reasons[0].message and "limit 2 s" in report.reasons[0].message
    assert check_signal(gapped, rate, SignalLimits(max_internal_silence_s=5.0)).passed  # limits are the caller's


def test_a_pause_in_room_tone_counts_as_a_pause(speech: tuple[Audio, int]) -> None:
    samples, rate = speech
    middle = samples.size // 2
    gapped = np.concatenate([samples[:middle], _silence(3.0, rate, hiss_dbfs=-60), samples[middle:]])
    report = check_signal(gapped + _silence(gapped.size / rate, rate, hiss_dbfs=-65), rate)  # hiss everywhere
    assert _codes(report) == ["internal_silence"]


def test_padding_before_and_after(speech: tuple[Audio, int]) -> None:
    samples, rate = speech
    late = check_signal(np.concatenate([_silence(1.5, rate), samples]), rate)
    assert _codes(late) == ["leading_silence"] and late.leading_silence_s == pytest.approx(1.56, abs=0.05)
    early = check_signal(np.concatenate([samples, _silence(2.0, rate)]), rate)
    assert _codes(early) == ["trailing_silence"]
    fine = check_signal(np.concatenate([_silence(0.5, rate), samples, _silence(0.8, rate)]), rate)
    assert fine.passed


def test_loudness_against_the_voice(speech: tuple[Audio, int]) -> None:
    samples, rate = speech
    voice = speech_dbfs(samples, rate)
    quiet = check_signal(samples * 0.1, rate, voice_dbfs=voice)  # -20 dB
    assert _codes(quiet) == ["loudness"] and "quieter" in quiet.reasons[0].message
    assert check_signal(samples * 0.5, rate, voice_dbfs=voice).passed  # -6 dB is within ±10
    assert check_signal(samples * 0.1, rate).passed  # no voice given: no comparison


def test_clipping(speech: tuple[Audio, int]) -> None:
    samples, rate = speech
    report = check_signal(np.clip(samples * 8, -1, 1), rate)
    assert "clipping" in _codes(report) and report.clipped_share > 0.001


@pytest.mark.parametrize(("samples", "code"), [
    (np.array([], dtype=np.float32), "empty"),
    (np.array([0.1, np.nan, 0.2, np.inf], dtype=np.float32), "non_finite"),
    (np.zeros(24_000, dtype=np.float32), "all_zero"),
    (np.full(24_000, 1e-5, dtype=np.float32), "no_speech"),  # a DC offset far under the floor
])
def test_nothing_to_hear(samples: Audio, code: str) -> None:
    report = check_signal(samples, 24_000)
    assert _codes(report) == [code] and report.speech_dbfs is None


def test_noise_at_a_speaking_level_is_not_a_voice() -> None:
    noise = np.random.default_rng(0).normal(0, 0.1, 48_000).astype(np.float32)
    report = check_signal(noise, 16_000)
    assert _codes(report) == ["noise"] and report.spectral_flatness is not None and report.spectral_flatness > 0.4


def test_pcm_and_stereo_are_accepted(speech: tuple[Audio, int]) -> None:
    samples, rate = speech
    pcm = (samples * 32767).astype(np.int16)
    stereo = np.stack([samples, samples], axis=1)
    reference = check_signal(samples, rate)
    assert check_signal(pcm, rate).speech_dbfs == pytest.approx(reference.speech_dbfs, abs=0.01)
    assert check_signal(stereo, rate) == reference


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rate"):
        check_signal(np.zeros(10), 0)
    with pytest.raises(ValueError, match="shape"):
        check_signal(np.zeros((2, 2, 2)), 16_000)
    assert speech_dbfs(np.zeros(100), 16_000) is None
