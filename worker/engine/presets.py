"""Model presets: architecture, mel settings and default weights for each supported model.

Pure Python. Architectures for the upstream models are read from the YAML files packaged with ``f5_tts`` (the single
source of truth), so a preset only names the config and the default checkpoint, vocab and vocoder. Any upstream-style
YAML (``model.backbone``, ``model.arch``, ``model.mel_spec``) can be given by path instead of a preset name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from worker.errors import BadInputError

HF_SCHEME = "hf://"
VOCOS_HUB = f"{HF_SCHEME}charactr/vocos-mel-24khz"

# A tiny DiT for CI and dry runs: the real classes, about 0.3 M parameters.
TINY_ARCH: dict[str, Any] = {
    "dim": 64,
    "depth": 2,
    "heads": 2,
    "dim_head": 32,
    "ff_mult": 2,
    "text_dim": 32,
    "text_mask_padding": True,
    "conv_layers": 1,
}
DEFAULT_MEL_SPEC: dict[str, Any] = {
    "target_sample_rate": 24000,
    "n_mel_channels": 100,
    "hop_length": 256,
    "win_length": 1024,
    "n_fft": 1024,
    "mel_spec_type": "vocos",
}


@dataclass(frozen=True)
class ModelPreset:
    """Everything needed to build and load one model; the loader fills in files that are not given."""

    name: str
    backbone: str = "DiT"
    arch: dict[str, Any] = field(default_factory=dict)
    mel_spec: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_MEL_SPEC))
    ckpt: str | None = None  # local path or hf:// id; None with random_weights
    vocab: str | None = None  # local path or hf:// id; None means the vocab packaged with f5_tts
    vocoder: str | None = VOCOS_HUB  # local folder or hf:// repo
    random_weights: bool = False  # deterministic random weights, written to a checkpoint and loaded like a real one
    vocoder_size: str = "full"  # for random vocoders: "full" (vocos-mel-24khz shape) or "tiny"

    @property
    def sample_rate(self) -> int:
        return int(self.mel_spec["target_sample_rate"])

    @property
    def hop_length(self) -> int:
        return int(self.mel_spec["hop_length"])


def _upstream_config(name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    path = files("f5_tts").joinpath(f"configs/{name}.yaml")
    return _read_model_section(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))


def _read_model_section(config: Any, source: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("arch"), dict):
        raise BadInputError("unknown_model", f"{source} has no model.arch section (an upstream F5-TTS config)")
    mel_spec = {**DEFAULT_MEL_SPEC, **(model.get("mel_spec") or {})}
    return str(model.get("backbone", "DiT")), dict(model["arch"]), mel_spec


def _from_upstream(name: str, config: str, **defaults: Any) -> ModelPreset:
    backbone, arch, mel = _upstream_config(config)
    return ModelPreset(name=name, backbone=backbone, arch=arch, mel_spec=mel, **defaults)


PRESET_NAMES = ("F5TTS_v1_Base", "F5TTS_Base", "F5-Spanish", "tiny-random")


def load_preset(name_or_yaml: str) -> ModelPreset:
    """A preset by name, or a preset read from an upstream-style YAML file given by path."""
    if name_or_yaml == "F5TTS_v1_Base":
        return _from_upstream(name_or_yaml, "F5TTS_v1_Base", ckpt="hf://SWivid/F5-TTS/F5TTS_v1_Base/model_1250000.safetensors")
    if name_or_yaml == "F5TTS_Base":
        return _from_upstream(name_or_yaml, "F5TTS_Base", ckpt="hf://SWivid/F5-TTS/F5TTS_Base/model_1200000.safetensors")
    if name_or_yaml == "F5-Spanish":
        return _from_upstream(
            name_or_yaml,
            "F5TTS_Base",
            ckpt="hf://jpgallegoar/F5-Spanish/model_1200000.safetensors",
            vocab="hf://jpgallegoar/F5-Spanish/vocab.txt",
        )
    if name_or_yaml == "tiny-random":
        return ModelPreset(
            name="tiny-random", arch=dict(TINY_ARCH), vocoder=None, random_weights=True, vocoder_size="tiny"
        )
    path = Path(name_or_yaml)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise BadInputError("unknown_model", f"model config {path} does not exist", "model")
        backbone, arch, mel = _read_model_section(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))
        return ModelPreset(name=path.stem, backbone=backbone, arch=arch, mel_spec=mel, ckpt=None)
    raise BadInputError(
        "unknown_model",
        f"unknown model {name_or_yaml!r}: use one of {', '.join(PRESET_NAMES)} or the path of an upstream YAML config",
        "model",
    )


def random_variant(preset: ModelPreset, vocoder_size: str = "full") -> ModelPreset:
    """The same architecture with deterministic random weights: for benchmarks, where speed ignores the weights."""
    return replace(preset, name=f"{preset.name}-random", ckpt=None, vocoder=None, random_weights=True,
                   vocoder_size=vocoder_size)
