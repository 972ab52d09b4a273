"""Deterministic random weights, written as real checkpoint files and loaded through the normal loading path.

Used by the ``tiny-random`` preset (CI, dry runs) and by benchmarks, where speed does not depend on the weights. The
output layers that upstream zero-initialises are given random values too, so a random model produces non-trivial
(noisy) mel frames and every stage of the pipeline sees real data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml

from worker.engine.loading import build_model

if TYPE_CHECKING:
    from f5_tts.model import CFM
from worker.engine.presets import ModelPreset

_VOCOS_FULL = {"dim": 512, "intermediate_dim": 1536, "num_layers": 8}
_VOCOS_TINY = {"dim": 32, "intermediate_dim": 64, "num_layers": 2}


def vocos_config(size: str, mel: dict) -> dict:
    backbone = _VOCOS_FULL if size == "full" else _VOCOS_TINY
    n_fft, hop = int(mel["n_fft"]), int(mel["hop_length"])
    return {
        "feature_extractor": {
            "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
            "init_args": {"sample_rate": int(mel["target_sample_rate"]), "n_fft": n_fft, "hop_length": hop,
                          "n_mels": int(mel["n_mel_channels"]), "padding": "center"},
        },
        "backbone": {
            "class_path": "vocos.models.VocosBackbone",
            "init_args": {"input_channels": int(mel["n_mel_channels"]), **backbone},
        },
        "head": {
            "class_path": "vocos.heads.ISTFTHead",
            "init_args": {"dim": backbone["dim"], "n_fft": n_fft, "hop_length": hop, "padding": "center"},
        },
    }


def _fingerprint(preset: ModelPreset, vocab_path: Path, seed: int) -> str:
    payload = json.dumps(
        {"arch": preset.arch, "mel": preset.mel_spec, "backbone": preset.backbone, "vocoder": preset.vocoder_size,
         "vocab": hashlib.sha256(vocab_path.read_bytes()).hexdigest(), "seed": seed, "format": 1},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _randomise_zeroed_layers(model: CFM) -> None:
    """Upstream zero-inits AdaLN and output projections; a zero model would output silence-like constants."""
    transformer = model.transformer
    layers = [transformer.norm_out.linear, transformer.proj_out]
    layers += [block.attn_norm.linear for block in transformer.transformer_blocks]
    for layer in layers:
        torch.nn.init.normal_(layer.weight, std=0.02)
        torch.nn.init.normal_(layer.bias, std=0.02)


def write_random_files(preset: ModelPreset, vocab_path: Path, root: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write (once) a random EMA-style safetensors checkpoint and a random vocos folder; return their paths.

    Deterministic for a given architecture, vocab and seed; written atomically so that concurrent worker processes
    can race to create it safely. The global RNG is left untouched.
    """
    from safetensors.torch import save_file

    from worker.engine.loading import load_vocab

    target = root / f"{preset.name}-{_fingerprint(preset, vocab_path, seed)}"
    ckpt, vocoder = target / "model.safetensors", target / "vocos"
    if ckpt.is_file() and (vocoder / "pytorch_model.bin").is_file():
        return ckpt, vocoder
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(preset, load_vocab(vocab_path))
            _randomise_zeroed_layers(model)
            state = {f"ema_model.{k}": v.contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(staging / "model.safetensors"))
            from vocos import Vocos

            (staging / "vocos").mkdir()
            config_path = staging / "vocos" / "config.yaml"
            config_path.write_text(yaml.safe_dump(vocos_config(preset.vocoder_size, preset.mel_spec)))
            torch.save(Vocos.from_hparams(str(config_path)).state_dict(), staging / "vocos" / "pytorch_model.bin")
        with contextlib.suppress(OSError):  # another process won the race; its files are identical
            os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ckpt, vocoder
