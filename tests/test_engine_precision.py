"""The precision policy (compute capability passed in: the one thing mocked, as there is no GPU here) and the per-job
``use_fp16=false`` opt-out, which must really run at full precision."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import REF_TEXT
from worker.contract import JobParams
from worker.engine.engine import Engine, SynthesisRequest, VoiceInput
from worker.engine.precision import job_precision, resolve_precision


@pytest.mark.parametrize(("setting", "device", "capability", "expected"), [
    ("auto", "cuda", (9, 0), "bf16"),  # H100
    ("auto", "cuda", (8, 0), "bf16"),  # A100
    ("auto", "cuda", (7, 5), "fp16"),  # T4
    ("auto", "cuda", (6, 1), "fp16"),  # P40
    ("auto", "cuda", (5, 2), "fp32"),  # M40
    ("auto", "cpu", None, "fp32"),
    ("fp32", "cuda", (9, 0), "fp32"),
    ("fp16", "cuda", (9, 0), "fp16"),
    ("bf16", "cpu", None, "bf16"),
])
def test_policy(setting, device, capability, expected):
    assert resolve_precision(setting, device, capability) == expected


@pytest.mark.parametrize(("setting", "device", "capability", "message"), [
    ("bf16", "cuda", (7, 5), "compute capability"),
    ("fp16", "cpu", None, "not supported on cpu"),
    ("fp8", "cuda", (9, 0), "must be one of"),
])
def test_policy_refuses_what_cannot_run(setting, device, capability, message):
    with pytest.raises(ValueError, match=message):
        resolve_precision(setting, device, capability)


def test_job_precision():
    assert job_precision("bf16", use_fp16=True) == "bf16"
    assert job_precision("bf16", use_fp16=False) == "fp32"


def test_use_fp16_false_really_runs_fp32(engine, engine_settings, ref_wav_bytes):
    """On a worker whose policy is half precision (bf16 on CPU here), use_fp16=false gives the fp32 engine's bytes."""
    half = Engine.build(engine_settings.model_copy(update={"precision": "bf16"}))
    voice = VoiceInput(ref_wav_bytes, REF_TEXT)
    text = "Llegó la noche y el hidalgo se puso a leer."
    full_job, half_job = (SynthesisRequest(text, voice, JobParams(use_fp16=flag), seed=8) for flag in (False, True))
    full, mixed = half.synthesize([full_job, half_job])
    reference = engine.synthesize([full_job])[0]
    assert (full.precision, mixed.precision) == ("fp32", "bf16")
    np.testing.assert_allclose(full.waveform, reference.waveform, atol=1e-6)
    assert np.abs(mixed.waveform - reference.waveform).max() > 1e-4
