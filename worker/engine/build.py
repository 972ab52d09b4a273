"""Building the model once: device, precision, preset, files, weights in the policy's dtype, vocoder, fingerprint.

Weights: on a bf16 or fp16 worker the DiT's parameters are stored in that dtype on the device (half the bytes of
fp32); its buffers (rotary and sinusoidal tables) stay fp32, and autocast runs what must run in fp32. The vocoder is
small (13.5 M parameters for vocos-mel-24khz) and stays fp32, as upstream keeps it.

The fingerprint names what determines the audio besides the job: the architecture, the checkpoint's, vocab's and
vocoder's bytes (sha256). The worker keys its skip check on it, with the job's precision, so that a changed
checkpoint under the same preset name never reuses stale audio.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from worker.engine import loading, runtime
from worker.engine.config import EngineConfig
from worker.engine.precision import Precision, resolve_precision
from worker.engine.presets import ModelPreset, load_preset
from worker.engine.random_weights import write_random_files
from worker.engine.vocoder import load_vocoder
from worker.errors import BadInputError, EngineBuildError

if TYPE_CHECKING:  # upstream's classes (they ship no types)
    from f5_tts.model import CFM
    from vocos import Vocos

log = logging.getLogger(__name__)

HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ModelFiles:
    checkpoint: Path
    vocab: Path
    vocoder: Path


@dataclass
class LoadedModel:
    preset: ModelPreset
    model: CFM  # eval, on device; DiT parameters in the policy's dtype
    vocoder: Vocos
    vocab: dict[str, int]
    device: torch.device
    precision: Precision
    files: ModelFiles
    fingerprint: str


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()  # by blocks: hashlib.file_digest is Python 3.11+
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def parameter_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def to_precision(model: CFM, precision: Precision) -> CFM:
    """Store the DiT's parameters in the policy's dtype (buffers stay fp32)."""
    dtype = HALF_DTYPES.get(precision)
    if dtype is not None:
        for parameter in model.transformer.parameters():
            parameter.data = parameter.data.to(dtype)
    return model


def _files(preset: ModelPreset, config: EngineConfig) -> ModelFiles:
    """Checkpoint, vocab and vocoder folder: from the config, else the preset's defaults, else random files."""
    vocab_spec = config.vocab_file or preset.vocab
    vocab = loading.resolve_file(vocab_spec, "F5_VOCAB_FILE", config.hf_cache_dir) if vocab_spec \
        else loading.packaged_vocab()
    random_files = None
    if preset.random_weights:
        root = Path(config.random_cache_dir or Path.home() / ".cache" / "f5-batch" / "random")
        random_files = write_random_files(preset, vocab, root)
    ckpt_spec = config.ckpt_file or preset.ckpt
    if ckpt_spec:
        checkpoint = loading.resolve_file(ckpt_spec, "F5_CKPT_FILE", config.hf_cache_dir)
    elif random_files is not None:
        checkpoint = random_files[0]
    else:
        raise EngineBuildError(f"model {config.model} names no checkpoint: set F5_CKPT_FILE")
    vocoder_spec = config.vocoder_path or preset.vocoder
    if vocoder_spec:
        vocoder = loading.resolve_vocoder_folder(vocoder_spec, "F5_VOCODER_PATH", config.hf_cache_dir)
    elif random_files is not None:
        vocoder = random_files[1]
    else:
        raise EngineBuildError(f"model {config.model} names no vocoder: set F5_VOCODER_PATH")
    return ModelFiles(checkpoint, vocab, vocoder)


def _fingerprint(preset: ModelPreset, files: ModelFiles) -> str:
    parts = {"arch": preset.arch, "backbone": preset.backbone, "mel": preset.mel_spec,
             "checkpoint": file_digest(files.checkpoint), "vocab": file_digest(files.vocab),
             "vocoder": [file_digest(files.vocoder / name) for name in ("config.yaml", "pytorch_model.bin")]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def read_model(preset: ModelPreset, vocab: dict[str, int], files: ModelFiles, label: str) -> CFM:
    """The CFM with the checkpoint's weights, in fp32 on the CPU."""
    model = loading.build_model(preset, vocab)
    loading.load_weights(model, loading.read_state_dict(files.checkpoint),
                         {"checkpoint": files.checkpoint, "vocab": files.vocab, "model": label})
    return model.eval()


def load(config: EngineConfig) -> LoadedModel:
    device = runtime.select_device(config.device)
    try:
        precision = resolve_precision(config.precision, device.type, runtime.capability(device))
        preset = load_preset(config.model)
    except (ValueError, BadInputError) as exc:
        raise EngineBuildError(str(exc)) from exc
    runtime.configure_backends(device, cudnn_benchmark=config.cudnn_benchmark,
                               matmul_precision=config.matmul_precision)
    files = _files(preset, config)
    vocab = loading.load_vocab(files.vocab)
    model = to_precision(read_model(preset, vocab, files, config.model), precision).to(device)
    vocoder = load_vocoder(files.vocoder).to(device)
    fingerprint = _fingerprint(preset, files)
    log.info("engine: model %s (%s, fingerprint %s) on %s, precision %s, DiT parameters %.1f MB",
             preset.name, files.checkpoint, fingerprint[:12], device, precision,
             parameter_bytes(model.transformer) / 1e6)
    return LoadedModel(preset, model, vocoder, vocab, device, precision, files, fingerprint)
