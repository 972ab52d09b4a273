"""The GPU path's properties that a CPU can prove, on the real f5_tts code (tiny model): weights in the policy's dtype,
batched text embeddings and vocoding within their stated bounds of the one-row results, and a safe vocoder config.
(``test_engine_compile.py`` covers compile; the GPU itself is measured by ``bench/gpu/``.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import QUIJOTE_OPENING, REF_TEXT
from worker.contract import JobParams
from worker.engine.engine import Engine, SynthesisRequest, VoiceInput
from worker.errors import EngineBuildError
from worker.planner import PlanItem, PlannerConfig, plan_batches

TEXTS = ["En un lugar de la Mancha, de cuyo nombre no quiero acordarme.", "Hola.",
         "Dijo el cura que no, y el barbero que sí; y así se quedaron, sin más razones."]


@pytest.fixture(scope="module")
def half(engine_settings):
    return Engine.build(engine_settings.model_copy(update={"precision": "bf16"}))


def test_a_bf16_worker_stores_the_dit_in_bf16_half_the_bytes(engine, half):
    assert {p.dtype for p in half.model.transformer.parameters()} == {torch.bfloat16}
    assert {b.dtype for b in half.model.transformer.buffers() if b.is_floating_point()} == {torch.float32}
    assert half.parameter_bytes()["dit"] * 2 == engine.parameter_bytes()["dit"]
    assert half.parameter_bytes()["vocoder"] == engine.parameter_bytes()["vocoder"]  # the vocoder stays fp32


def test_bf16_output_stays_within_the_stated_bound_of_fp32(engine, half, ref_wav_bytes):
    """Stated bound: relative L2 error ≤ 2% of the fp32 waveform (0.1% measured on this model)."""
    voice = VoiceInput(ref_wav_bytes, REF_TEXT)
    for index, text in enumerate(TEXTS):
        request = SynthesisRequest(text, voice, JobParams(nfe_step=16), seed=index)
        full, bf16 = engine.synthesize([request])[0].waveform, half.synthesize([request])[0].waveform
        assert full.shape == bf16.shape
        assert 0 < np.linalg.norm(full - bf16) / np.linalg.norm(full) <= 0.02


def test_a_use_fp16_false_job_loads_the_full_precision_copy_once(half, ref_wav_bytes):
    request = SynthesisRequest(TEXTS[0], VoiceInput(ref_wav_bytes, REF_TEXT), JobParams(use_fp16=False), seed=1)
    assert half.synthesize([request])[0].precision == "fp32"
    sizes = half.parameter_bytes()
    assert sizes["dit_fp32_copy"] == 2 * sizes["dit"]


@pytest.mark.parametrize("which", ["v1-like", "base-like"])
def test_batched_text_embeddings_equal_each_row_alone(engine, base_like_engine, ref_wav_bytes, which):
    """Stated bound: ≤ 1e-5 from upstream's ``TextEmbedding`` run on each row at its own length, cond and uncond,
    for both text-padding variants (F5TTS_v1_Base masks filler tokens; F5TTS_Base does not)."""
    from worker.engine.text_embedding import text_embeddings

    model = engine if which == "v1-like" else base_like_engine
    voice = VoiceInput(ref_wav_bytes, REF_TEXT)
    chunks = [c for text in TEXTS for c in model.prepare(SynthesisRequest(text, voice, JobParams(), seed=0)).chunks]
    module = model.model.transformer.text_embed
    length = max(c.frames for c in chunks) + 37
    with torch.inference_mode():
        for drop in (False, True):
            batched = text_embeddings(module, [c.row.tokens for c in chunks], [c.frames for c in chunks], length,
                                      [drop] * len(chunks))
            for i, chunk in enumerate(chunks):
                alone = module(chunk.row.tokens.unsqueeze(0), chunk.frames, drop_text=drop)[0]
                assert torch.abs(batched[i, : chunk.frames] - alone).max() <= 1e-5
                assert not batched[i, chunk.frames :].any()


def test_batched_vocoding_equals_each_row_alone(engine):
    """Stated bound: ≤ 1e-4 from ``vocos.decode`` of each row alone (fp32)."""
    from worker.engine.vocoder import decode_rows

    generator = torch.Generator().manual_seed(0)
    mels = [torch.randn(frames, 100, generator=generator) for frames in (37, 300, 512, 129)]
    with torch.inference_mode():
        batched = decode_rows(engine.vocoder, mels)
        for mel, wave in zip(mels, batched, strict=True):
            alone = engine.vocoder.decode(mel.transpose(0, 1).unsqueeze(0))[0]
            assert wave.shape == alone.shape
            assert torch.abs(wave - alone).max() <= 1e-4


@pytest.mark.parametrize("section", ["backbone", "head"])
def test_a_vocoder_config_may_not_name_other_classes(engine, tmp_path, section):
    folder = tmp_path / "vocos"
    folder.mkdir()
    config = yaml.safe_load((engine.loaded.files.vocoder / "config.yaml").read_text())
    config[section]["class_path"] = "os.system"
    config[section]["init_args"] = {"command": "touch /tmp/f5-owned"}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "pytorch_model.bin").write_bytes((engine.loaded.files.vocoder / "pytorch_model.bin").read_bytes())
    from worker.engine.vocoder import load_vocoder

    with pytest.raises(EngineBuildError, match=rf"{section} must be vocos\.(models|heads)\..*not 'os.system'"):
        load_vocoder(folder)


def test_seven_rows_run_in_one_pass_not_four_two_one():
    plans = plan_batches([PlanItem(i, 900 + i) for i in range(7)], PlannerConfig(frame_budget=100_000))
    assert [plan.size for plan in plans] == [7]


def test_a_long_text_runs_as_one_request_with_batched_chunks(engine, ref_wav_bytes):
    text = " ".join([QUIJOTE_OPENING] * 3)
    prepared = engine.prepare(SynthesisRequest(text, VoiceInput(ref_wav_bytes, REF_TEXT), JobParams(), seed=2))
    assert len(prepared.chunks) > 1
    result = engine.run_pass(prepared.chunks)
    assert len(result.waves) == len(prepared.chunks) and all(w.device == engine.device for w in result.waves)
