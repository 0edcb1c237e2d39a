"""The network shared by every configuration: item + positional embeddings, a stack of blocks,
a final LayerNorm; item embeddings are tied, so the score of item ``i`` is ``<h, E[i]>``.

Item row 0 is padding (never scored), rows 1..n_items are catalogue items (internal index + 1),
row n_items + 1 is the [MASK] token of the masked objective. Sequences are left-padded, and
positions are counted from the most recent item backwards, so cutting a batch down to its
longest sequence never changes what a position means.

Blocks with time channels (``hstu``, ``fuxi``) also read each token's time (``times``, Unix
seconds) and each query position's time (``query_times``; by default its own event's time, see
:mod:`~vitrina.models.sequential.objectives`), from which the relative indices are computed once
per forward pass and shared by the blocks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vitrina.models.sequential.layers import LayersName, attention_mask, build_layers, relative

PAD = 0


class SequenceEncoder(nn.Module):
    def __init__(
        self,
        n_items: int,
        *,
        dim: int,
        max_len: int,
        layers: LayersName,
        n_blocks: int,
        n_heads: int,
        dropout: float,
        ffn_mult: int,
    ) -> None:
        super().__init__()
        self.n_items = n_items
        self.dim = dim
        self.item_emb = nn.Embedding(n_items + 2, dim, padding_idx=PAD)
        self.pos_emb = nn.Embedding(max_len, dim)
        self.emb_drop = nn.Dropout(dropout)
        self.blocks = build_layers(
            layers,
            dim=dim,
            n_blocks=n_blocks,
            n_heads=n_heads,
            dropout=dropout,
            ffn_mult=ffn_mult,
            max_len=max_len,
        )
        self.max_len = max_len
        self.final_ln = nn.LayerNorm(dim)
        nn.init.normal_(self.item_emb.weight, std=dim**-0.5)
        nn.init.normal_(self.pos_emb.weight, std=dim**-0.5)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()

    @property
    def mask_token(self) -> int:
        return self.n_items + 1

    def forward(
        self,
        seq: torch.Tensor,
        causal: bool,
        segments: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        times: torch.Tensor | None = None,
        query_times: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states (batch x len x dim) of left-padded token ids (batch x len); padded rows are 0.

        Packed rows (see :mod:`~vitrina.models.sequential.packing`) pass ``segments`` (attention stays
        within a segment) and ``positions`` (counted from each segment's last item). ``times`` and
        ``query_times`` (batch x len, seconds) feed the time channels of blocks that have them."""
        valid = seq != PAD
        x = self.item_emb(seq) * math.sqrt(self.dim)
        return self.encode(x, valid, causal, segments, positions, times, query_times)

    def encode(
        self,
        x: torch.Tensor,
        valid: torch.Tensor,
        causal: bool,
        segments: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        times: torch.Tensor | None = None,
        query_times: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Blocks over input embeddings ``x`` with a bool ``valid`` mask (split out for tests)."""
        if positions is None:
            t = x.shape[1]
            positions = torch.arange(t - 1, -1, -1, device=x.device)
        h = self.emb_drop(x + self.pos_emb(positions))
        mask = attention_mask(valid, causal, segments)
        rel = None
        if any(getattr(b, "relative", False) for b in self.blocks):
            rel = relative(positions, times, query_times, self.max_len)
        for block in self.blocks:
            h = block(h, mask, rel) if rel is not None else block(h, mask)
        return self.final_ln(h) * valid.unsqueeze(-1).to(h.dtype)

    def item_weights(self) -> torch.Tensor:
        """Output embeddings of catalogue items (n_items x dim), tied to the input ones."""
        return self.item_emb.weight[1 : self.n_items + 1]
