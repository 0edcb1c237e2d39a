"""Transformer blocks: the original SASRec block, a pre-LayerNorm block, the LiGR block, and the
HSTU and FuXi-α blocks, which also read relative positions and time gaps.

Every block maps ``(x, attn_mask)`` to a tensor of the same shape: ``x`` is (batch x len x dim),
``attn_mask`` a boolean (batch x 1 x len x len) mask (True = may attend). Blocks with
``relative = True`` take a third argument, the :class:`Relative` indices of every (query, key)
pair. Attention is the only operation that mixes positions and it never attends to padded keys,
so padding cannot reach a real position; whatever padded positions hold is ignored downstream.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

LayersName = Literal["sasrec", "preln", "ligr", "hstu", "fuxi"]
TIME_LAYERS = ("hstu", "fuxi")  # blocks with time channels
N_TIME_BUCKETS = 128
_LOG_BASE = 0.301  # log-bucket width (natural log), as in HSTU: bucket = floor(ln(max(1, |gap|)) / 0.301)


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


@dataclass(frozen=True)
class Relative:
    """Per (query, key) pair: ``position`` = how many events the key lies before the query (can be
    negative for bidirectional attention), shifted to ``[0, 2 max_len - 2]``, (len x len) or
    (batch x len x len); ``time`` = log bucket of ``|query time - key time|`` in seconds,
    (batch x len x len), or None without times. ``n`` is the normaliser of pointwise attention
    (the model's ``max_len``)."""

    position: torch.Tensor
    time: torch.Tensor | None
    n: int


def relative(
    positions: torch.Tensor, times: torch.Tensor | None, query_times: torch.Tensor | None, max_len: int
) -> Relative:
    """:class:`Relative` from positions counted back from the newest item ((len,) or
    (batch x len)) and optional key / query times (batch x len, Unix seconds)."""
    offset = positions.unsqueeze(-2) - positions.unsqueeze(-1)  # [query, key] = p_key - p_query
    position = (offset + max_len - 1).clamp(0, 2 * max_len - 2)
    bucket = None
    if times is not None:
        q = times if query_times is None else query_times
        gap = (q.unsqueeze(-1) - times.unsqueeze(-2)).abs().clamp(min=1).double()
        bucket = (gap.log() / _LOG_BASE).floor().long().clamp(max=N_TIME_BUCKETS - 1)
    return Relative(position, bucket, max_len)


class RelativeBias(nn.Module):
    """One learned scalar per relative position and one per time bucket (shared by the heads)."""

    def __init__(self, max_len: int) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.zeros(2 * max_len - 1))
        self.time = nn.Parameter(torch.zeros(N_TIME_BUCKETS))
        nn.init.normal_(self.position, std=0.02)
        nn.init.normal_(self.time, std=0.02)

    def positional(self, rel: Relative) -> torch.Tensor:
        return self.position[rel.position]

    def temporal(self, rel: Relative, like: torch.Tensor) -> torch.Tensor:
        """Time-gap weights; without times every gap counts as 0 (bucket 0)."""
        if rel.time is None:
            return self.time[0].expand(like.shape)
        return self.time[rel.time]


def _heads(z: torch.Tensor, n_heads: int) -> torch.Tensor:
    b, t, d = z.shape
    return z.view(b, t, n_heads, d // n_heads).transpose(1, 2)


def _merge(z: torch.Tensor) -> torch.Tensor:
    b, h, t, d = z.shape
    return z.transpose(1, 2).reshape(b, t, h * d)


class HSTUBlock(nn.Module):
    """HSTU (Zhai et al. 2024), one layer:

    U, V, Q, K = SiLU(W1 LN(x)) split in four;
    A = SiLU(Q K^T + rab) ⊙ mask / n, rab = bias(relative position) + bias(log-bucketed time gap);
    y = x + W2 Drop(LN(A V) ⊙ U).

    Pointwise attention (no softmax) keeps the strength of a signal, normalised by n = max_len.
    """

    relative = True

    def __init__(self, dim: int, n_heads: int, dropout: float, ffn_mult: int, max_len: int) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"n_factors ({dim}) must be divisible by n_heads ({n_heads})")
        del ffn_mult  # HSTU has no feed-forward network: the U gate replaces it
        self.n_heads = n_heads
        self.ln_in = nn.LayerNorm(dim)
        self.uvqk = nn.Linear(dim, 4 * dim)
        self.bias = RelativeBias(max_len)
        self.ln_att = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, rel: Relative) -> torch.Tensor:
        u, v, q, k = F.silu(self.uvqk(self.ln_in(x))).chunk(4, dim=-1)
        logits = _heads(q, self.n_heads) @ _heads(k, self.n_heads).transpose(-1, -2)
        pos = self.bias.positional(rel)
        rab = (pos + self.bias.temporal(rel, pos)).unsqueeze(-3)  # shared by the heads
        att = F.silu(logits + rab) * attn_mask / rel.n
        av = _merge(att @ _heads(v, self.n_heads))
        return x + self.out(self.drop(self.ln_att(av) * u))


class FuXiBlock(nn.Module):
    """FuXi-α (Ye et al. 2025), one layer: adaptive multi-channel self-attention + multi-stage FFN.

    U (3 dim), V, Q, K = SiLU(W_uvqk RMSNorm(x));
    semantic channel A_s = SiLU(Q K^T) ⊙ mask / n (per head), positional channel
    A_p[i, j] = w_pos(relative position) ⊙ mask, temporal channel A_t[i, j] = w_time(log-bucketed
    |t_i - t_j|) ⊙ mask; each channel aggregates the same V;
    a = RMSNorm([A_s V, A_p V, A_t V]) ⊙ U;
    stage 1: o = x + W_o Drop(a); stage 2: y = o + SwiGLU(Drop(RMSNorm(o))).
    """

    relative = True

    def __init__(self, dim: int, n_heads: int, dropout: float, ffn_mult: int, max_len: int) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"n_factors ({dim}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.dim = dim
        self.norm_in = nn.RMSNorm(dim)
        self.uvqk = nn.Linear(dim, 6 * dim, bias=False)
        self.bias = RelativeBias(max_len)
        self.norm_att = nn.RMSNorm(3 * dim)
        self.out = nn.Linear(3 * dim, dim)
        self.norm_ffn = nn.RMSNorm(dim)
        self.ffn = SwiGLU(dim, ffn_mult)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, rel: Relative) -> torch.Tensor:
        d = self.dim
        u, v, q, k = F.silu(self.uvqk(self.norm_in(x))).split([3 * d, d, d, d], dim=-1)
        vh = _heads(v, self.n_heads)
        semantic = F.silu(_heads(q, self.n_heads) @ _heads(k, self.n_heads).transpose(-1, -2))
        semantic = semantic * attn_mask / rel.n
        mask = attn_mask.squeeze(1)
        positional = self.bias.positional(rel) * mask
        temporal = self.bias.temporal(rel, positional) * mask
        channels = [_merge(semantic @ vh), positional @ v, temporal @ v]
        a = self.norm_att(torch.cat(channels, dim=-1)) * u
        o = x + self.out(self.drop(a))
        return o + self.ffn(self.drop(self.norm_ffn(o)))


_BLOCKS: dict[str, type[nn.Module]] = {"sasrec": SASRecBlock, "preln": PreLNBlock, "ligr": LiGRBlock}
_RELATIVE_BLOCKS: dict[str, type[HSTUBlock | FuXiBlock]] = {"hstu": HSTUBlock, "fuxi": FuXiBlock}


def build_layers(
    name: LayersName,
    *,
    dim: int,
    n_blocks: int,
    n_heads: int,
    dropout: float,
    ffn_mult: int,
    max_len: int = 50,
) -> nn.ModuleList:
    """``n_blocks`` blocks of the named kind (``max_len`` sizes the relative-position tables)."""
    if name in _RELATIVE_BLOCKS:
        kind = _RELATIVE_BLOCKS[name]
        return nn.ModuleList(kind(dim, n_heads, dropout, ffn_mult, max_len) for _ in range(n_blocks))
    if name not in _BLOCKS:
        raise ValueError(f"layers must be one of {sorted(_BLOCKS) + sorted(_RELATIVE_BLOCKS)}, got {name!r}")
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
