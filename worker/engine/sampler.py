"""Batched flow-matching sampling with the upstream DiT, so that a batched item equals the same item run alone.

Upstream's ``CFM.sample`` takes one seed for a whole batch and embeds text over the padded batch. Here each row gets
its own noise (``torch.manual_seed(seed); torch.randn(frames, n_mels)``, drawn from a private generator so no global
RNG state changes), and the text embeddings of every row, conditional and unconditional, are computed in one call that
equals each row's own-length embedding (``text_embedding``); they reach the DiT through its public text cache.
Attention and the convolutional position embedding mask the padding. The ODE is upstream's: Euler steps on
Empirically Pruned Step Sampling timesteps with sway, and classifier-free guidance.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from worker.engine.precision import Precision
from worker.engine.text_embedding import pad_rows, text_embeddings

if TYPE_CHECKING:
    from f5_tts.model import CFM

log = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CFG_EPSILON = 1e-5  # upstream skips the unconditional pass below this guidance strength


class PassCancelled(Exception):
    """Every job of a running pass was abandoned (time limit): the pass stops at its next step."""


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
    compiled: bool  # run through the compiled DiT


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


class Sampler:
    """Runs sampling passes on one CFM model. ``compiled_forward`` is the compiled DiT, if any."""

    def __init__(self, model: CFM, device: torch.device, compiled_forward: Callable | None = None):
        self.model = model
        self.transformer = model.transformer
        self.device = device
        self.n_mels = int(model.num_channels)
        self.compiled_forward = compiled_forward

    def _cache_text(self, rows: Sequence[SamplingRow], length: int, use_cfg: bool) -> None:
        """Every row's conditional (and, with CFG, unconditional) text embedding, in one call."""
        count = len(rows)
        tokens = [row.tokens for row in rows] * (2 if use_cfg else 1)
        frames = [row.frames for row in rows] * (2 if use_cfg else 1)
        drop = [False] * count + ([True] * count if use_cfg else [])
        embedded = text_embeddings(self.transformer.text_embed, tokens, frames, length, drop).float()
        self.transformer.text_cond = embedded[:count]
        # upstream reads its cache only when both halves are set; without CFG the second is never used
        self.transformer.text_uncond = embedded[count:] if use_cfg else embedded[:count]

    def _velocity(self, forward: Callable, x, cond, t, mask, cfg, use_cfg: bool) -> torch.Tensor:
        if not use_cfg:
            return forward(x=x, cond=cond, text=None, time=t, mask=mask, cache=True)
        both = forward(x=x, cond=cond, text=None, time=t, mask=mask, cfg_infer=True, cache=True)
        pred, null_pred = torch.chunk(both, 2, dim=0)
        return pred + (pred - null_pred) * cfg

    @torch.inference_mode()
    def sample(self, rows: Sequence[SamplingRow], spec: SamplingSpec,
               should_stop: Callable[[], bool] | None = None) -> torch.Tensor:
        """Final mel frames ``(rows, padded_frames, n_mels)`` in fp32, reference region restored as upstream does."""
        length, device = spec.padded_frames, self.device
        frames = torch.tensor([row.frames for row in rows], device=device)
        cond_lens = torch.tensor([row.cond_mel.shape[0] for row in rows], device=device)
        positions = torch.arange(length, device=device).unsqueeze(0)
        compiled = spec.compiled and self.compiled_forward is not None
        # A lone eager row with no padding needs no mask, so it runs the same kernels as upstream's single item. The
        # compiled DiT always gets a mask: one path, warmed up once.
        unpadded = len(rows) == 1 and rows[0].frames == length
        mask = None if unpadded and not compiled else positions < frames.unsqueeze(1)
        cond = pad_rows([row.cond_mel for row in rows], length)
        y = pad_rows([seeded_noise(row.seed, row.frames, self.n_mels, device) for row in rows], length)
        cfg = torch.tensor([row.cfg_strength for row in rows], device=device).view(-1, 1, 1)
        t = timesteps(spec.steps, spec.sway_sampling_coef, device)
        forward = self.compiled_forward if compiled and self.compiled_forward is not None else self.transformer
        # a pass run between two steps of another (should_stop may run one) leaves the other's text cache as it was
        outer = (self.transformer.text_cond, self.transformer.text_uncond)
        with autocast(spec.precision, device):
            self._cache_text(rows, length, spec.use_cfg)
            try:
                for step in range(spec.steps):
                    if should_stop is not None and _outside_autocast(should_stop, device):
                        raise PassCancelled(f"abandoned after {step} of {spec.steps} steps")
                    velocity = self._velocity(forward, y, cond, t[step], mask, cfg, spec.use_cfg)
                    y = y + (t[step + 1] - t[step]) * velocity.float()
            finally:  # cleared, or the outer pass's again
                self.transformer.text_cond, self.transformer.text_uncond = outer
        in_reference = (positions < cond_lens.unsqueeze(1)).unsqueeze(-1)
        return torch.where(in_reference, cond, y)

    @torch.inference_mode()
    def warm_up(self, batch: int, length: int, precision: Precision, use_cfg: bool) -> None:
        """Run the compiled forward once at one shape and CFG setting (compiling it if this path is new)."""
        if self.compiled_forward is None:
            return
        device = self.device
        rows = [SamplingRow(torch.zeros(length // 2, self.n_mels, device=device),
                            torch.zeros(8, dtype=torch.long, device=device), length - i, i, 2.0)
                for i in range(batch)]
        spec = SamplingSpec(1, None, length, precision, use_cfg, compiled=True)
        self.sample(rows, spec)


def _outside_autocast(should_stop: Callable[[], bool], device: torch.device) -> bool:
    """``should_stop`` may run a pass of its own (interactive work between two steps): at its own precision, not
    under this pass's autocast (a nested fp32 request, or the fp32 vocoder, would otherwise run in half precision)."""
    with torch.autocast(device.type, enabled=False):
        return should_stop()
