"""Batched flow-matching sampling with the upstream DiT, so that a batched item equals the same item run alone.

Upstream's ``CFM.sample`` takes one seed for a whole batch and computes text embeddings over the padded batch. Here
each row gets its own noise (``torch.manual_seed(seed); torch.randn(frames, n_mels)``, drawn from a private generator
so no global RNG state changes), and each row's text embedding is computed at its own length and handed to the DiT
through its public text cache. Attention and the convolutional position embedding mask the padding. The ODE is
upstream's: Euler steps on Empirically Pruned Step Sampling timesteps with sway, and classifier-free guidance.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from worker.engine.precision import Precision

log = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CFG_EPSILON = 1e-5  # upstream skips the unconditional pass below this guidance strength


@dataclass(frozen=True)
class SamplingRow:
    """One chunk of one job, ready for the sampler."""

    cond_mel: torch.Tensor  # (cond_frames, n_mels): the voice's mel, on device
    tokens: torch.Tensor  # (n_tokens,) vocab indices of reference text + chunk text, on device
    frames: int  # total frames to generate, reference included
    seed: int
    cfg_strength: float


@dataclass(frozen=True)
class SamplingSpec:
    """What every row of one pass shares."""

    steps: int
    sway_sampling_coef: float | None
    padded_frames: int
    precision: Precision
    use_cfg: bool
    compiled: bool  # run through the compiled DiT (shapes must be warmed-up buckets)


def seeded_noise(seed: int, frames: int, channels: int, device: torch.device) -> torch.Tensor:
    """The noise upstream gets from ``torch.manual_seed(seed); torch.randn(frames, channels)``, without global state."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return torch.randn(frames, channels, generator=generator, device=device)


def timesteps(steps: int, sway: float | None, device: torch.device) -> torch.Tensor:
    from f5_tts.model.utils import get_epss_timesteps

    t = get_epss_timesteps(steps, device=device, dtype=torch.float32)
    if sway is not None:
        t = t + sway * (torch.cos(torch.pi / 2 * t) - 1 + t)
    return t


def autocast(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def _pad_stack(rows: Sequence[torch.Tensor], length: int) -> torch.Tensor:
    first = rows[0]
    out = first.new_zeros((len(rows), length, *first.shape[1:]))
    for i, row in enumerate(rows):
        out[i, : row.shape[0]] = row
    return out


class Sampler:
    """Runs sampling passes on one CFM model. ``forward`` is the DiT, or its compiled wrapper."""

    def __init__(self, model: torch.nn.Module, device: torch.device, compiled_forward: Callable | None = None):
        self.model = model
        self.transformer = model.transformer
        self.device = device
        self.n_mels = int(model.num_channels)
        self.compiled_forward = compiled_forward

    def _text_embeddings(self, rows: Sequence[SamplingRow], length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's text embedding at its own length, as a lone run computes it, padded to the pass length."""
        embed = self.transformer.text_embed
        conds, unconds = [], []
        for row in rows:
            tokens = row.tokens.unsqueeze(0)
            conds.append(embed(tokens, row.frames, drop_text=False)[0].float())
            unconds.append(embed(tokens, row.frames, drop_text=True)[0].float())
        return _pad_stack(conds, length), _pad_stack(unconds, length)

    def _velocity(self, forward: Callable, x, cond, t, mask, cfg, use_cfg: bool) -> torch.Tensor:
        if not use_cfg:
            return forward(x=x, cond=cond, text=None, time=t, mask=mask, cache=True)
        both = forward(x=x, cond=cond, text=None, time=t, mask=mask, cfg_infer=True, cache=True)
        pred, null_pred = torch.chunk(both, 2, dim=0)
        return pred + (pred - null_pred) * cfg

    @torch.inference_mode()
    def sample(self, rows: Sequence[SamplingRow], spec: SamplingSpec) -> torch.Tensor:
        """Final mel frames ``(rows, padded_frames, n_mels)`` in fp32, reference region restored as upstream does."""
        length, device = spec.padded_frames, self.device
        frames = torch.tensor([row.frames for row in rows], device=device)
        cond_lens = torch.tensor([row.cond_mel.shape[0] for row in rows], device=device)
        positions = torch.arange(length, device=device).unsqueeze(0)
        # A lone row with no padding needs no mask, so it runs the same unmasked kernels as upstream's single item.
        mask = None if len(rows) == 1 and rows[0].frames == length else positions < frames.unsqueeze(1)
        cond = _pad_stack([row.cond_mel for row in rows], length)
        y = _pad_stack([seeded_noise(row.seed, row.frames, self.n_mels, device) for row in rows], length)
        cfg = torch.tensor([row.cfg_strength for row in rows], device=device).view(-1, 1, 1)
        t = timesteps(spec.steps, spec.sway_sampling_coef, device)
        forward = self.compiled_forward if (spec.compiled and self.compiled_forward is not None) else self.transformer
        with autocast(spec.precision, device):
            self.transformer.text_cond, self.transformer.text_uncond = self._text_embeddings(rows, length)
            try:
                for step in range(spec.steps):
                    velocity = self._velocity(forward, y, cond, t[step], mask, cfg, spec.use_cfg)
                    y = y + (t[step + 1] - t[step]) * velocity.float()
            finally:
                self.transformer.clear_cache()
        in_reference = (positions < cond_lens.unsqueeze(1)).unsqueeze(-1)
        return torch.where(in_reference, cond, y)

    @torch.inference_mode()
    def warm_up_shape(self, batch: int, length: int, precision: Precision, use_cfg: bool = True) -> None:
        """Run the compiled forward at one padded shape, enough times for compile and CUDA-graph recording."""
        if self.compiled_forward is None:
            return
        device, text_dim = self.device, self.transformer.text_embed.text_embed.embedding_dim
        x = torch.randn(batch, length, self.n_mels, device=device)
        cond = torch.zeros_like(x)
        mask = torch.ones(batch, length, dtype=torch.bool, device=device)
        with autocast(precision, device):
            text = torch.zeros(batch, length, text_dim, device=device)
            self.transformer.text_cond, self.transformer.text_uncond = text, text.clone()
            try:
                for value in (0.0, 0.5, 0.9):
                    self._velocity(self.compiled_forward, x, cond, torch.tensor(value, device=device), mask,
                                   torch.ones(batch, 1, 1, device=device), use_cfg)
            finally:
                self.transformer.clear_cache()
