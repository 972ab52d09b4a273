"""Self-attention for batched inference that does not materialise a (batch, heads, n, n) mask.

Upstream's ``AttnProcessor`` expands the padding mask to ``(b, h, n, n)`` before ``scaled_dot_product_attention``.
PyTorch turns that boolean view into a dense additive mask, which at a batch of 64 with CFG and 2,048 frames is over
10 GB per call and forces the slow math kernels. This processor computes the same attention (same projections,
qk-norm, rotary embedding, including ``pe_attn_head``) but passes the key-padding mask as ``(b, 1, 1, n)``, which the
fused kernels broadcast. It is installed on each DiT block's ``Attention.processor``, the upstream extension point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from x_transformers.x_transformers import apply_rotary_pos_emb

if TYPE_CHECKING:
    from f5_tts.model import DiT


class KeyPaddingAttnProcessor:
    """Drop-in for upstream's torch-backend ``AttnProcessor`` (DiT self-attention), with a broadcast key mask."""

    def __init__(self, pe_attn_head: int | None = None) -> None:
        self.pe_attn_head = pe_attn_head

    def _heads(self, attn, tensor: torch.Tensor, batch: int) -> torch.Tensor:
        return tensor.view(batch, -1, attn.heads, tensor.shape[-1] // attn.heads).transpose(1, 2)

    def _rotate(self, query: torch.Tensor, key: torch.Tensor, rope) -> tuple[torch.Tensor, torch.Tensor]:
        freqs, xpos_scale = rope
        q_scale, k_scale = (xpos_scale, xpos_scale**-1.0) if xpos_scale is not None else (1.0, 1.0)
        if self.pe_attn_head is None:
            return apply_rotary_pos_emb(query, freqs, q_scale), apply_rotary_pos_emb(key, freqs, k_scale)
        heads = self.pe_attn_head
        query = torch.cat([apply_rotary_pos_emb(query[:, :heads], freqs, q_scale), query[:, heads:]], dim=1)
        key = torch.cat([apply_rotary_pos_emb(key[:, :heads], freqs, k_scale), key[:, heads:]], dim=1)
        return query, key

    def __call__(self, attn, x: torch.Tensor, mask: torch.Tensor | None = None, rope=None) -> torch.Tensor:
        batch = x.shape[0]
        query = self._heads(attn, attn.to_q(x), batch)
        key = self._heads(attn, attn.to_k(x), batch)
        value = self._heads(attn, attn.to_v(x), batch)
        if attn.q_norm is not None:
            query = attn.q_norm(query)
        if attn.k_norm is not None:
            key = attn.k_norm(key)
        if rope is not None:
            query, key = self._rotate(query, key, rope)
        key_mask = mask[:, None, None, :] if mask is not None else None
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, out.shape[1] * out.shape[-1]).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if mask is not None:
            out = out.masked_fill(~mask.unsqueeze(-1), 0.0)
        return out


def install(transformer: DiT) -> int:
    """Replace every DiT block's attention processor; returns how many were replaced."""
    count = 0
    for block in transformer.transformer_blocks:
        upstream = block.attn.processor
        if getattr(upstream, "attn_backend", "torch") != "torch":
            continue  # flash_attn's varlen path already handles padding without a dense mask
        block.attn.processor = KeyPaddingAttnProcessor(getattr(upstream, "pe_attn_head", None))
        count += 1
    return count
