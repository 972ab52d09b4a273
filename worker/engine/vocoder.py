"""The Vocos vocoder: loaded safely, and run on a whole pass at once.

Loading: Vocos' own ``from_hparams`` imports and instantiates whatever class a ``config.yaml`` names, so a planted
config could run any code in the worker. Here the config may name only the three classes an F5-TTS vocoder is made of
(mel features, the ConvNeXt backbone, the ISTFT head), with plain values as arguments; they are built directly.

Decoding: one call for every row of a pass. Vocos' backbone is convolutional, so rows padded to a common length would
see each other's padding near their ends. Each row is masked to its own length before every convolution, which is what
a row decoded alone sees (zero padding), and the inverse STFT runs per row at the row's length, in fp32. Bound: each
row equals ``vocos.decode`` of that row alone up to float reordering (≤ 1e-4 in fp32, tested). Waveforms stay on the
device.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Number
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml

from worker.errors import EngineBuildError

if TYPE_CHECKING:
    from vocos import Vocos

ALLOWED_CLASSES = {
    "feature_extractor": "vocos.feature_extractors.MelSpectrogramFeatures",
    "backbone": "vocos.models.VocosBackbone",
    "head": "vocos.heads.ISTFTHead",
}


def _init_args(config: dict, section: str, where: Path) -> dict:
    spec = config.get(section)
    if not isinstance(spec, dict) or spec.get("class_path") != ALLOWED_CLASSES[section]:
        named = spec.get("class_path") if isinstance(spec, dict) else spec
        raise EngineBuildError(f"vocoder config {where}: {section} must be {ALLOWED_CLASSES[section]}, not {named!r} "
                               "(only the Vocos mel vocoder is supported)")
    args = spec.get("init_args") or {}
    if not isinstance(args, dict) or not all(isinstance(k, str) and (isinstance(v, (Number, str, bool)) or v is None)
                                             for k, v in args.items()):
        raise EngineBuildError(f"vocoder config {where}: {section}.init_args must be plain values")
    return args


def load_vocoder(folder: Path) -> Vocos:
    """A Vocos model from ``config.yaml`` and ``pytorch_model.bin``, building only the allowed classes."""
    from vocos import Vocos
    from vocos.feature_extractors import MelSpectrogramFeatures
    from vocos.heads import ISTFTHead
    from vocos.models import VocosBackbone

    config_path = folder / "config.yaml"
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise EngineBuildError(f"vocoder config {config_path} could not be read ({exc})") from exc
    if not isinstance(config, dict):
        raise EngineBuildError(f"vocoder config {config_path} is not a mapping")
    try:
        args = {section: _init_args(config, section, config_path) for section in ALLOWED_CLASSES}
        vocoder = Vocos(feature_extractor=MelSpectrogramFeatures(**args["feature_extractor"]),
                        backbone=VocosBackbone(**args["backbone"]), head=ISTFTHead(**args["head"]))
        state = torch.load(str(folder / "pytorch_model.bin"), map_location="cpu", weights_only=True)
        vocoder.load_state_dict(state)
        if vocoder.backbone.adanorm:
            raise EngineBuildError(f"vocoder in {folder}: conditional (AdaLayerNorm) backbones are not supported")
    except EngineBuildError:
        raise
    except Exception as exc:
        raise EngineBuildError(f"vocoder in {folder} could not be loaded ({type(exc).__name__}: {exc})") from exc
    return vocoder.eval()


@torch.inference_mode()
def decode_rows(vocoder: Vocos, mels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Waveforms (fp32, on the mel's device) for mel spectrograms of shape ``(frames, n_mels)``, decoded together."""
    lengths = [mel.shape[0] for mel in mels]
    longest = max(lengths)
    device = mels[0].device
    batch = mels[0].new_zeros((len(mels), longest, mels[0].shape[1]), dtype=torch.float32)
    for i, mel in enumerate(mels):
        batch[i, : lengths[i]] = mel
    valid = (torch.arange(longest, device=device).unsqueeze(0)
             < torch.tensor(lengths, device=device).unsqueeze(1)).unsqueeze(1)  # (rows, 1, frames)
    backbone, head = vocoder.backbone, vocoder.head
    x = backbone.embed(batch.transpose(1, 2))
    x = backbone.norm(x.transpose(1, 2)).transpose(1, 2)
    for block in backbone.convnext:
        x = block(x.masked_fill(~valid, 0.0))
    x = backbone.final_layer_norm(x.transpose(1, 2))
    spectrum = head.out(x).transpose(1, 2).float()
    magnitude, phase = spectrum.chunk(2, dim=1)
    magnitude = torch.clip(torch.exp(magnitude), max=1e2)
    complex_spectrum = magnitude * (torch.cos(phase) + 1j * torch.sin(phase))
    return [head.istft(complex_spectrum[i : i + 1, :, : lengths[i]])[0] for i in range(len(mels))]
