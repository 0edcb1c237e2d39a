"""Transformer blocks: the original SASRec block, a pre-LayerNorm block and the LiGR block.

Every block maps ``(x, attn_mask)`` to a tensor of the same shape: ``x`` is (batch x len x dim),
``attn_mask`` a boolean (batch x 1 x len x len) mask (True = may attend). Attention is the only
operation that mixes positions and it never attends to padded keys, so padding cannot reach a real
position; whatever padded positions hold is ignored downstream.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

LayersName = Literal["sasrec", "preln", "ligr"]


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention on ``scaled_dot_product_attention`` (fused kernels on CPU and CUDA)."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"n_factors ({dim}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, query: torch.Tensor, key: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        b, t, d = query.shape
        h = self.n_heads
        q = self.q(query).view(b, t, h, d // h).transpose(1, 2)
        k, v = self.kv(key).view(b, t, 2, h, d // h).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        return self.out(att.transpose(1, 2).reshape(b, t, d))


class SASRecBlock(nn.Module):
    """Kang & McAuley (2018): the LayerNorm'd query attends (residual), LayerNorm, then a point-wise
    ReLU FFN (residual)."""

    def __init__(self, dim: int, n_heads: int, dropout: float, ffn_mult: int) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, n_heads, dropout)
        self.ln_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim * ffn_mult),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(dim * ffn_mult, dim),
            nn.Dropout(dropout),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        q = self.ln_attn(x)
        h = self.ln_ffn(q + self.drop(self.attn(q, x, attn_mask)))
        return h + self.ffn(h)


class PreLNBlock(nn.Module):
    """Pre-LayerNorm block (as in BERT4Rec re-implementations): x + MHA(LN(x)), then h + GELU-FFN(LN(h))."""

    def __init__(self, dim: int, n_heads: int, dropout: float, ffn_mult: int) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, n_heads, dropout)
        self.ln_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim * ffn_mult), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim * ffn_mult, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        q = self.ln_attn(x)
        h = x + self.drop(self.attn(q, q, attn_mask))
        return h + self.drop(self.ffn(self.ln_ffn(h)))


class SwiGLU(nn.Module):
    """``W_out(silu(W_a z) * W_b z)`` with hidden width ``dim * ffn_mult``."""

    def __init__(self, dim: int, ffn_mult: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * dim * ffn_mult)
        self.down = nn.Linear(dim * ffn_mult, dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(z).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class LiGRBlock(nn.Module):
    """LiGR (gated residuals):

    h = x + σ(W1 x + b1) ⊙ Drop(MHA(LN(x))),  y = h + σ(W2 h + b2) ⊙ Drop(SwiGLU(LN(h))).
    """

    def __init__(self, dim: int, n_heads: int, dropout: float, ffn_mult: int) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, n_heads, dropout)
        self.gate_attn = nn.Linear(dim, dim)
        self.ln_ffn = nn.LayerNorm(dim)
        self.ffn = SwiGLU(dim, ffn_mult)
        self.gate_ffn = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        q = self.ln_attn(x)
        h = x + torch.sigmoid(self.gate_attn(x)) * self.drop(self.attn(q, q, attn_mask))
        return h + torch.sigmoid(self.gate_ffn(h)) * self.drop(self.ffn(self.ln_ffn(h)))


_BLOCKS: dict[str, type[nn.Module]] = {"sasrec": SASRecBlock, "preln": PreLNBlock, "ligr": LiGRBlock}


def build_layers(
    name: LayersName, *, dim: int, n_blocks: int, n_heads: int, dropout: float, ffn_mult: int
) -> nn.ModuleList:
    """``n_blocks`` blocks of the named kind."""
    if name not in _BLOCKS:
        raise ValueError(f"layers must be one of {sorted(_BLOCKS)}, got {name!r}")
    return nn.ModuleList(_BLOCKS[name](dim, n_heads, dropout, ffn_mult) for _ in range(n_blocks))


def attention_mask(valid: torch.Tensor, causal: bool, segments: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean (batch x 1 x len x len) mask from a (batch x len) bool ``valid``: keys must be real
    items (and not in the future when ``causal``; within the query's own segment when ``segments``
    labels packed sequences). Each position may always attend to itself, so a padded query row is
    never empty (an all-False row would give NaN); its output is zeroed anyway."""
    t = valid.shape[1]
    mask = valid[:, None, None, :]
    if segments is not None:
        mask = mask & (segments[:, None, :, None] == segments[:, None, None, :])
    if causal:
        mask = mask & _causal(t, valid.device)
    return mask | _eye(t, valid.device)


@functools.cache
def _causal(t: int, device: torch.device) -> torch.Tensor:
    return torch.ones(t, t, dtype=torch.bool, device=device).tril()


@functools.cache
def _eye(t: int, device: torch.device) -> torch.Tensor:
    return torch.eye(t, dtype=torch.bool, device=device)
