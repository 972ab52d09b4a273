"""Text embeddings for a whole pass in one call, equal to upstream's one-row-at-a-time result.

Upstream's ``TextEmbedding`` embeds one row at that row's own length: its ConvNeXt-V2 blocks see zero padding past the
row's end, and their GRN normalises over the row's frames only. Run over a padded batch, the blocks would see the
other rows' padding instead (and GRN would average over it), so a batched row would drift from the same row run
alone. This module computes the batch with upstream's own layers and weights, but masks each row to its length before
every convolution and inside GRN, which is exactly what a lone run sees. Cond and uncond rows (classifier-free
guidance drops the text) go through together: one call per pass instead of two per row.

Bound: the result equals ``text_embed(tokens, frames)`` of each row alone up to float reordering (≤ 1e-5 in fp32,
tested); at padded positions it is zero. Models with ``text_embedding_average_upsampling`` are embedded row by row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # upstream's classes (they ship no types)
    from f5_tts.model.backbones.dit import TextEmbedding
    from f5_tts.model.modules import ConvNeXtV2Block


def _masked_block(block: ConvNeXtV2Block, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Upstream's ``ConvNeXtV2Block`` with each row limited to its valid frames (``valid``: (b, n, 1) bool)."""
    residual = x
    h = block.dwconv(x.masked_fill(~valid, 0.0).transpose(1, 2)).transpose(1, 2)
    h = block.act(block.pwconv1(block.norm(h)))
    grn = block.grn
    gx = torch.norm(h.masked_fill(~valid, 0.0), p=2, dim=1, keepdim=True)  # over the row's own frames only
    nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
    h = grn.gamma * (h * nx) + grn.beta + h
    return residual + block.pwconv2(h)


def _per_row(module: TextEmbedding, tokens: Sequence[torch.Tensor], frames: Sequence[int], length: int,
             drop_text: bool) -> torch.Tensor:
    rows = [module(t.unsqueeze(0), int(n), drop_text=drop_text)[0] for t, n in zip(tokens, frames, strict=True)]
    out = rows[0].new_zeros((len(rows), length, rows[0].shape[-1]))
    for i, row in enumerate(rows):
        out[i, : row.shape[0]] = row
    return out


def text_embeddings(module: TextEmbedding, tokens: Sequence[torch.Tensor], frames: Sequence[int], length: int,
                    drop_text: Sequence[bool]) -> torch.Tensor:
    """``(rows, length, text_dim)``: row ``i`` embeds ``tokens[i]`` (vocab indices, 1-D) over ``frames[i]`` frames,
    with the text dropped where ``drop_text[i]`` (the unconditional half of CFG), zero past ``frames[i]``."""
    if getattr(module, "average_upsampling", False):
        return torch.cat([_per_row(module, [t], [n], length, drop) for t, n, drop
                          in zip(tokens, frames, drop_text, strict=True)])
    device = tokens[0].device
    rows = len(tokens)
    text = torch.zeros((rows, length), dtype=torch.long, device=device)  # 0 is upstream's filler token
    for i, row in enumerate(tokens):
        count = min(row.shape[0], int(frames[i]))  # upstream curtails text longer than the mel
        text[i, :count] = row[:count] + 1
    lengths = torch.tensor([int(n) for n in frames], device=device)
    valid = (torch.arange(length, device=device).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)
    filler = (text == 0).unsqueeze(-1)  # upstream's mask_padding mask: filler tokens, which include the tail
    dropped = torch.tensor(list(drop_text), device=device).view(-1, 1)
    embedded = module.text_embed(text.masked_fill(dropped, 0)).masked_fill(~valid, 0.0)
    if not module.extra_modeling:
        return embedded
    x = embedded + module.freqs_cis[:length].unsqueeze(0) * valid  # promotes as upstream's `text + freqs` does
    keep = ~filler if module.mask_padding else valid
    x = x.masked_fill(~keep, 0.0)
    for block in module.text_blocks:
        x = _masked_block(block, x, valid).masked_fill(~keep, 0.0)
    return x


def pad_rows(rows: Sequence[torch.Tensor], length: int) -> torch.Tensor:
    """Stack rows of different lengths, zero-padded at the end to ``length``."""
    return torch.stack([F.pad(row, (0, 0) * (row.dim() - 1) + (0, length - row.shape[0])) for row in rows])
