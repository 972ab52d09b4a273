"""Checkpoint, vocab, vocoder and config loading through the engine's one loading path (real files, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import REF_TEXT
from worker.contract import JobParams
from worker.engine.engine import Engine, SynthesisRequest, VoiceInput
from worker.engine.presets import TINY_ARCH, load_preset
from worker.engine.random_weights import write_random_files
from worker.errors import BadInputError, EngineBuildError

TEXT = "Cuando la noche llega, el caballero sueña con gigantes."


@pytest.fixture(scope="module")
def tiny_files(random_cache, engine):
    from worker.engine.loading import packaged_vocab

    return write_random_files(load_preset("tiny-random"), packaged_vocab(), random_cache)


@pytest.fixture(scope="module")
def reference_audio(engine, ref_wav_bytes):
    return engine.synthesize([SynthesisRequest(TEXT, VoiceInput(ref_wav_bytes, REF_TEXT), JobParams(), seed=21)])[0]


def _audio(engine_settings, ref_wav_bytes, **overrides):
    engine = Engine.build(engine_settings.model_copy(update=overrides))
    return engine.synthesize([SynthesisRequest(TEXT, VoiceInput(ref_wav_bytes, REF_TEXT), JobParams(), seed=21)])[0]


def test_safetensors_ema_checkpoint_by_path(engine_settings, ref_wav_bytes, tiny_files, reference_audio):
    ckpt, vocoder = tiny_files
    assert any(key.startswith("ema_model.") for key in load_file(str(ckpt)))
    out = _audio(engine_settings, ref_wav_bytes, ckpt_file=str(ckpt), vocoder_path=str(vocoder))
    np.testing.assert_array_equal(out.waveform, reference_audio.waveform)


@pytest.mark.parametrize("layout", ["plain", "ema"])
def test_pt_checkpoints(engine_settings, ref_wav_bytes, tiny_files, reference_audio, tmp_path, layout):
    ckpt, vocoder = tiny_files
    state = load_file(str(ckpt))
    if layout == "plain":
        payload = {"model_state_dict": {k.removeprefix("ema_model."): v for k, v in state.items()}}
    else:
        payload = {"ema_model_state_dict": {**state, "initted": torch.tensor(True), "step": torch.tensor(7)},
                   "model_state_dict": {}}
    path = tmp_path / f"model_{layout}.pt"
    torch.save(payload, path)
    out = _audio(engine_settings, ref_wav_bytes, ckpt_file=str(path), vocoder_path=str(vocoder))
    np.testing.assert_array_equal(out.waveform, reference_audio.waveform)


def test_upstream_style_yaml_config(engine_settings, ref_wav_bytes, tiny_files, reference_audio, tmp_path):
    ckpt, vocoder = tiny_files
    config = {"model": {"name": "my_tiny", "backbone": "DiT", "arch": dict(TINY_ARCH),
                        "mel_spec": {"target_sample_rate": 24000, "n_mel_channels": 100, "hop_length": 256,
                                     "win_length": 1024, "n_fft": 1024, "mel_spec_type": "vocos"}}}
    path = tmp_path / "my_tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    out = _audio(engine_settings, ref_wav_bytes, model=str(path), ckpt_file=str(ckpt), vocoder_path=str(vocoder))
    np.testing.assert_array_equal(out.waveform, reference_audio.waveform)


def test_vocab_mismatch_names_the_files(engine_settings, tiny_files, tmp_path):
    ckpt, vocoder = tiny_files
    vocab = tmp_path / "short_vocab.txt"
    vocab.write_text(" \na\nb\nc\n", encoding="utf-8")
    with pytest.raises(EngineBuildError) as caught:
        Engine.build(engine_settings.model_copy(update={"ckpt_file": str(ckpt), "vocab_file": str(vocab),
                                                        "vocoder_path": str(vocoder)}))
    message = str(caught.value)
    assert str(ckpt) in message and str(vocab) in message and "F5_VOCAB_FILE" in message


def test_config_mismatch_names_the_files(engine_settings, tiny_files, tmp_path):
    ckpt, vocoder = tiny_files
    config = {"model": {"backbone": "DiT", "arch": {**TINY_ARCH, "depth": 3}}}
    path = tmp_path / "deeper.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(EngineBuildError, match=r"does not match the model config.*deeper\.yaml"):
        Engine.build(engine_settings.model_copy(update={"model": str(path), "ckpt_file": str(ckpt),
                                                        "vocoder_path": str(vocoder)}))


def test_missing_checkpoint_names_the_setting(engine_settings, tmp_path):
    with pytest.raises(EngineBuildError, match="F5_CKPT_FILE"):
        Engine.build(engine_settings.model_copy(update={"ckpt_file": str(tmp_path / "nope.safetensors")}))


def test_hub_id_offline_names_the_setting(engine_settings, tmp_path, monkeypatch):
    # The hub cannot be reached from CI; HF_HUB_OFFLINE makes that immediate instead of a DNS timeout.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EngineBuildError, match=r"offline.*F5_CKPT_FILE"):
        Engine.build(engine_settings.model_copy(update={
            "ckpt_file": "hf://SWivid/F5-TTS/F5TTS_v1_Base/model_1250000.safetensors",
            "hf_cache_dir": str(tmp_path)}))


def test_vocoder_folder_must_hold_its_files(engine_settings, tmp_path):
    with pytest.raises(EngineBuildError, match=r"F5_VOCODER_PATH.*config\.yaml"):
        Engine.build(engine_settings.model_copy(update={"vocoder_path": str(tmp_path)}))


def test_unknown_preset(engine_settings):
    with pytest.raises(EngineBuildError, match=r"unknown model 'F5TTS_v9'.*tiny-random"):
        Engine.build(engine_settings.model_copy(update={"model": "F5TTS_v9"}))
    with pytest.raises(BadInputError):
        load_preset("F5TTS_v9")


def test_presets_read_upstream_configs():
    assert load_preset("F5TTS_v1_Base").arch["dim"] == 1024
    assert load_preset("F5TTS_Base").arch["text_mask_padding"] is False
    spanish = load_preset("F5-Spanish")
    assert spanish.arch == load_preset("F5TTS_Base").arch
    assert spanish.ckpt == "hf://jpgallegoar/F5-Spanish/model_1200000.safetensors"
    assert spanish.vocab == "hf://jpgallegoar/F5-Spanish/vocab.txt"
