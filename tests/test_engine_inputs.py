"""Bad input is a clear error for that item alone (contract validation, then the engine's own checks)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError

from tests.conftest import REF_TEXT
from worker.contract import Job, JobParams
from worker.engine.engine import SynthesisRequest, VoiceInput

GOOD = "El caballero salió de su aldea al amanecer."


def _wav(samples: np.ndarray, rate: int = 24000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _job(**overrides) -> dict:
    job = {"text": GOOD, "voice": {"ref_audio": "voices/a.wav", "ref_text": REF_TEXT}}
    job.update(overrides)
    return job


@pytest.mark.parametrize(("job", "needle"), [
    (_job(text=""), "empty"),
    (_job(text="   \n\t "), "empty or only whitespace"),
    (_job(text="x" * 4001), "f5-batch enqueue"),
    (_job(params={"nfe_step": 0}), "nfe_step"),
    (_job(params={"nfe_step": 129}), "nfe_step"),
    (_job(params={"speed": 0}), "speed"),
    (_job(params={"speed": 4.5}), "speed"),
    (_job(params={"cfg_strength": -0.1}), "cfg_strength"),
    (_job(params={"cfg_strength": 10.5}), "cfg_strength"),
])
def test_contract_refuses(job, needle):
    with pytest.raises(ValidationError, match=needle):
        Job.model_validate(job)


def _run(engine, text=GOOD, audio=None, ref_bytes=None, preprocess=True):
    voice = VoiceInput(audio if audio is not None else ref_bytes, REF_TEXT, preprocess)
    return engine.synthesize([SynthesisRequest(text, voice, JobParams(), seed=1)])[0]


@pytest.mark.parametrize(("make_audio", "needle"), [
    (lambda: b"", "empty"),
    (lambda: b"RIFF\x00\x00garbage" * 40, "not a readable audio file"),
    (lambda: _wav(0.3 * np.sin(np.arange(7200) / 7)), "at least 0.5 s"),
    (lambda: _wav(np.zeros(48000)), "silent"),
    (lambda: _wav(0.3 * np.sin(np.arange(384_000) / 7), rate=384_000), "sampled at 384000 Hz"),
    (lambda: _wav(0.3 * np.sin(np.arange(4000) / 7), rate=4_000), "sampled at 4000 Hz"),
    (lambda: _wav(0.3 * np.sin(np.tile(np.arange(48000)[:, None] / 7, (1, 8))), rate=24000), "8 channels"),
])
def test_bad_reference(engine, make_audio, needle):
    out = _run(engine, audio=make_audio(), preprocess=False)
    assert out.error is not None and out.error.code == "bad_reference" and needle in out.error.message
    assert out.error.field == "voice.ref_audio"


def test_text_without_any_vocab_character(engine, ref_wav_bytes):
    out = _run(engine, text="🙂🙃🙂", ref_bytes=ref_wav_bytes)
    assert out.error is not None and out.error.code == "bad_text" and "no letters or digits" in out.error.message
    fraktur = _run(engine, text="𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝔣𝔯𝔞𝔨𝔱𝔲𝔯.", ref_bytes=ref_wav_bytes)
    assert fraktur.error is not None and "vocabulary" in fraktur.error.message


def test_unpunctuated_stretch_too_long_for_one_piece(engine, ref_wav_bytes):
    out = _run(engine, text=" ".join(["palabra"] * 500), ref_bytes=ref_wav_bytes)
    assert out.error is not None and "add punctuation" in out.error.message


def test_a_bad_item_fails_alone(engine, ref_wav_bytes):
    good = SynthesisRequest(GOOD, VoiceInput(ref_wav_bytes, REF_TEXT), JobParams(), seed=2)
    bad = SynthesisRequest(GOOD, VoiceInput(b"not audio at all", REF_TEXT), JobParams(), seed=2)
    first, second, third = engine.synthesize([good, bad, good])
    assert first.ok and third.ok and not second.ok
    np.testing.assert_array_equal(first.waveform, third.waveform)


def test_stereo_and_8khz_references_are_accepted(engine, ref_wav_bytes):
    mono, rate = sf.read(io.BytesIO(ref_wav_bytes), dtype="float32")
    stereo = io.BytesIO()
    sf.write(stereo, np.stack([mono, mono], axis=1), rate, format="WAV", subtype="PCM_16")
    assert _run(engine, audio=stereo.getvalue()).ok
    assert _run(engine, audio=_wav(mono[::3], 8000)).ok
