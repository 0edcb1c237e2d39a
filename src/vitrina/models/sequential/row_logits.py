"""Logits of each target position against its own row's negatives (``negatives_per="sequence"``).

Position ``p`` of row ``r`` scores ``logits[p, j] = <h[p], W[negatives[r, j]]>``. Done naively, as
one (rows x width x dim) @ (rows x dim x n) matmul over the padded batch, most of the work is
padding (on Beauty the median sequence is a few items, the longest of a 128-row batch 50), the
gathered (rows x n x dim) negative embeddings are several MB per batch, and autograd turns the
gradient of their transposed view into a strided copy before it reaches the embedding table: on
the hosts we measured that copy and the gather took as long as the matmuls, with their cost set by
each host's caches and page faults rather than by its arithmetic.

Here rows are sorted by their number of targets and cut into chunks of a few rows; each chunk
multiplies a grid only as wide as its own longest row, its negative embeddings are gathered per
chunk (small enough to stay in cache) and gathered again in the backward pass instead of being
kept, and the backward pass writes each gradient in the layout its consumer reads, so no transposed
copy is made. The result equals the naive product up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

CHUNK_BYTES = 1 << 20  # gathered negative embeddings per chunk: about 1 MB stays in L2 on current CPUs


@dataclass(frozen=True)
class _Chunk:
    rows: torch.Tensor  # (c,) batch rows in this chunk
    positions: torch.Tensor  # (m,) flat indices of their target positions
    slots: torch.Tensor  # (m,) where each sits in the chunk's (c * width) grid
    width: int  # the chunk's most targets in one row


def _plan(row: np.ndarray, n_rows: int, chunk_rows: int, device: torch.device) -> list[_Chunk]:
    """Chunks of ``chunk_rows`` rows, by decreasing number of targets; ``row`` is the batch row of
    each target position (positions in row-major order)."""
    counts = np.bincount(row, minlength=n_rows)
    order = np.argsort(-counts, kind="stable")
    place = np.empty(n_rows, dtype=np.int64)
    place[order] = np.arange(n_rows)  # each row's place in the sorted order
    rank = np.arange(len(row)) - (np.cumsum(counts) - counts)[row]  # index within its row
    chunk_of = place[row] // chunk_rows
    by_chunk = np.argsort(chunk_of, kind="stable")
    bounds = np.searchsorted(chunk_of[by_chunk], np.arange(-(-n_rows // chunk_rows) + 1))
    chunks = []
    for c in range(len(bounds) - 1):
        positions = by_chunk[bounds[c] : bounds[c + 1]]
        if not len(positions):
            break  # rows are sorted by count: the remaining chunks hold no targets
        rows = order[c * chunk_rows : (c + 1) * chunk_rows]
        width = int(counts[rows[0]])
        slots = (place[row[positions]] - c * chunk_rows) * width + rank[positions]
        chunks.append(
            _Chunk(*(torch.from_numpy(a).to(device) for a in (rows, positions, slots)), width)  # type: ignore[arg-type]
        )
    return chunks


def _grid(x: torch.Tensor, ch: _Chunk) -> torch.Tensor:
    """The chunk's rows of ``x`` (positions x k) laid out as a zero-padded (rows * width) x k grid."""
    src = x.index_select(0, ch.positions)
    return x.new_zeros(len(ch.rows) * ch.width, x.shape[1]).index_copy_(0, ch.slots, src)


class _RowLogits(torch.autograd.Function):
    """(pos, neg) = (<h[p], T[positives[p]]>, <h[p], T[negatives[row[p], j]]>); the gradient of the
    embedding table ``T`` comes out as one dense tensor."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        h: torch.Tensor,
        table: torch.Tensor,
        positives: torch.Tensor,
        negatives: torch.Tensor,
        chunks: list[_Chunk],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, d = negatives.shape[1], h.shape[1]
        pos = (h * table.index_select(0, positives)).sum(-1)
        neg = h.new_empty(len(h), n)
        items = []  # each chunk's negatives, flat, reused by the backward pass
        for ch in chunks:
            items.append(negatives.index_select(0, ch.rows).view(-1))
            neg_w = table.index_select(0, items[-1]).view(len(ch.rows), n, d)
            logits = torch.bmm(_grid(h, ch).view(len(ch.rows), ch.width, d), neg_w.transpose(1, 2))
            neg.index_copy_(0, ch.positions, logits.view(-1, n).index_select(0, ch.slots))
        ctx.save_for_backward(h, table, positives, *items)
        ctx.chunks = chunks  # type: ignore[attr-defined]
        return pos, neg

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_pos: torch.Tensor, grad_neg: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        h, table, positives, *items = ctx.saved_tensors  # type: ignore[attr-defined]
        n, d = grad_neg.shape[1], h.shape[1]
        want_h, want_table = ctx.needs_input_grad[:2]
        grad_h = grad_pos[:, None] * table.index_select(0, positives) if want_h else None
        grad_table = torch.zeros_like(table) if want_table else None
        if grad_table is not None:
            grad_table.index_add_(0, positives, grad_pos[:, None] * h)
        grad_neg = grad_neg.contiguous()
        for ch, flat in zip(ctx.chunks, items, strict=True):  # type: ignore[attr-defined]
            g = _grid(grad_neg, ch).view(len(ch.rows), ch.width, n)
            if grad_h is not None:
                neg_w = table.index_select(0, flat).view(len(ch.rows), n, d)
                grad_h.index_add_(0, ch.positions, torch.bmm(g, neg_w).view(-1, d).index_select(0, ch.slots))
            if grad_table is not None:
                # (c x n x width) @ (c x width x d): the gradient comes out (rows x n x d), contiguous
                grad_w = torch.bmm(g.transpose(1, 2), _grid(h, ch).view(len(ch.rows), ch.width, d))
                grad_table.index_add_(0, flat, grad_w.view(-1, d))
        return grad_h, grad_table, None, None, None


def row_logits(
    h: torch.Tensor, row: np.ndarray, table: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive logits (positions,) and negative logits (positions x n) of target states ``h``
    (positions x dim, in row-major order of the batch) whose batch rows are ``row``: ``positives``
    (positions,) and ``negatives`` (rows x n) index rows of the embedding ``table``."""
    n_rows, n = negatives.shape
    chunk_rows = max(1, CHUNK_BYTES // max(1, n * h.shape[1] * h.element_size()))
    chunks = _plan(row, n_rows, chunk_rows, h.device)
    return _RowLogits.apply(h, table, positives, negatives, chunks)  # type: ignore[no-any-return]
