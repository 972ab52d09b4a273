"""Building the model and loading its files: checkpoints, vocab and vocoder, from local paths or ``hf://`` ids.

Every failure here is an :class:`EngineBuildError` whose message names the file and the setting to change, because the
person reading it is an operator starting a worker, often on a machine that cannot reach the hub.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from worker.engine.presets import HF_SCHEME, ModelPreset
from worker.errors import EngineBuildError

if TYPE_CHECKING:
    from f5_tts.model import CFM

log = logging.getLogger(__name__)

_DROPPED_KEYS = {"initted", "step", "mel_spec.mel_stft.mel_scale.fb", "mel_spec.mel_stft.spectrogram.window"}
_TEXT_EMBED_KEY = "transformer.text_embed.text_embed.weight"


def _hub_download(spec: str, filename: str | None, setting: str, cache_dir: str | None) -> Path:
    """Fetch ``hf://owner/repo/path`` (or a file of ``hf://owner/repo``) through huggingface_hub."""
    from huggingface_hub import hf_hub_download

    parts = spec[len(HF_SCHEME) :].strip("/").split("/")
    if len(parts) < 2 or (filename is None and len(parts) < 3):
        raise EngineBuildError(f"{spec!r} is not a hub id of the form hf://owner/repo/path/to/file ({setting})")
    repo_id = "/".join(parts[:2])
    target = filename if filename is not None else "/".join(parts[2:])
    if filename is not None and len(parts) > 2:
        target = "/".join([*parts[2:], filename])
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=target, cache_dir=cache_dir))
    except Exception as exc:  # the hub raises many types: offline, 404, auth, DNS
        raise EngineBuildError(
            f"could not fetch {target} from {HF_SCHEME}{repo_id} ({type(exc).__name__}: {str(exc)[:200]}). "
            f"If this machine is offline, download the file elsewhere and set {setting} to its local path."
        ) from exc


def resolve_file(spec: str, setting: str, cache_dir: str | None = None) -> Path:
    """A local file path, or an ``hf://`` id downloaded (or found in the cache)."""
    if spec.startswith(HF_SCHEME):
        return _hub_download(spec, None, setting, cache_dir)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise EngineBuildError(f"{setting}={spec} does not exist or is not a file")
    return path


def resolve_vocoder_folder(spec: str, setting: str = "F5_VOCODER_PATH", cache_dir: str | None = None) -> Path:
    """A vocos folder holding ``config.yaml`` and ``pytorch_model.bin``: local, or an ``hf://owner/repo``."""
    if spec.startswith(HF_SCHEME):
        config = _hub_download(spec, "config.yaml", setting, cache_dir)
        _hub_download(spec, "pytorch_model.bin", setting, cache_dir)
        return config.parent
    folder = Path(spec).expanduser()
    missing = [name for name in ("config.yaml", "pytorch_model.bin") if not (folder / name).is_file()]
    if missing:
        raise EngineBuildError(f"{setting}={spec} must be a folder with config.yaml and pytorch_model.bin; "
                               f"missing: {', '.join(missing)}")
    return folder


def packaged_vocab() -> Path:
    from importlib.resources import files

    return Path(str(files("f5_tts").joinpath("infer/examples/vocab.txt")))


def load_vocab(path: Path) -> dict[str, int]:
    """The character vocabulary, one symbol per line, as upstream's ``custom`` tokenizer reads it."""
    from f5_tts.model.utils import get_tokenizer

    try:
        vocab, size = get_tokenizer(str(path), "custom")
    except (OSError, UnicodeDecodeError) as exc:
        raise EngineBuildError(f"vocab file {path} could not be read: {exc}") from exc
    if size < 2 or vocab.get(" ") != 0:
        raise EngineBuildError(f"vocab file {path} does not look like an F5-TTS vocab (space must be line 1)")
    return vocab


def build_model(preset: ModelPreset, vocab: dict[str, int]) -> CFM:
    """The upstream CFM with its backbone, with attention masking on so that batched items equal single ones."""
    import f5_tts.model as f5_model
    from f5_tts.model import CFM

    if preset.backbone != "DiT":
        raise EngineBuildError(f"model {preset.name}: backbone {preset.backbone} is not supported (DiT only)")
    if preset.mel_spec.get("mel_spec_type", "vocos") != "vocos":
        raise EngineBuildError(f"model {preset.name}: only the vocos mel spectrogram/vocoder is supported")
    arch = {**preset.arch, "attn_mask_enabled": True}
    arch.pop("checkpoint_activations", None)
    mel = preset.mel_spec
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="attn_mask_enabled=True")
        transformer = f5_model.DiT(**arch, text_num_embeds=len(vocab), mel_dim=int(mel["n_mel_channels"]))
    from worker.engine.attention import install

    install(transformer)
    return CFM(
        transformer=transformer,
        mel_spec_kwargs={key: mel[key] for key in (
            "n_fft", "hop_length", "win_length", "n_mel_channels", "target_sample_rate", "mel_spec_type")},
        odeint_kwargs={"method": "euler"},
        vocab_char_map=vocab,
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Weights from ``.safetensors`` or ``.pt``, EMA preferred, upstream's key prefixes and stale buffers removed."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: dict[str, Any] = load_file(str(path), device="cpu")
        else:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EngineBuildError(f"checkpoint {path} could not be read ({type(exc).__name__}: {exc})") from exc
    if "ema_model_state_dict" in raw:
        raw = raw["ema_model_state_dict"]
    elif "model_state_dict" in raw:
        raw = raw["model_state_dict"]
    state = {}
    for key, value in raw.items():
        key = key.removeprefix("ema_model.")
        if key in _DROPPED_KEYS or not isinstance(value, torch.Tensor):
            continue
        state[key] = value
    if not state:
        raise EngineBuildError(f"checkpoint {path} holds no model weights")
    return state


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], files: dict[str, Path | str]) -> None:
    """Load strictly; a mismatch names the checkpoint, vocab and config, and what did not match."""
    named = ", ".join(f"{what} {where}" for what, where in files.items())
    expected = model.state_dict()
    if _TEXT_EMBED_KEY in state and _TEXT_EMBED_KEY in expected:
        have, want = state[_TEXT_EMBED_KEY].shape[0], expected[_TEXT_EMBED_KEY].shape[0]
        if have != want:
            raise EngineBuildError(
                f"the checkpoint's text embedding has {have - 1} symbols but the vocab has {want - 1} "
                f"({named}). Use the vocab the checkpoint was trained with (F5_VOCAB_FILE)."
            )
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        detail = "; ".join(filter(None, [
            f"missing {missing[:3]}" if missing else "",
            f"unexpected {unexpected[:3]}" if unexpected else "",
            f"shape {shapes[0]}: checkpoint {tuple(state[shapes[0]].shape)} vs model "
            f"{tuple(expected[shapes[0]].shape)}" if shapes else "",
        ]))
        raise EngineBuildError(f"checkpoint does not match the model config ({named}): {detail}")
    model.load_state_dict(state, strict=True)
