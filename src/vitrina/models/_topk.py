"""Top-k selection over score blocks with masks applied in place before the cut.

Full ranking is a matmul (or a model's own scoring) followed by a top-k per row; both run in
torch on the same buffer, multi-threaded, without copies. The top-k uses group maxima: the ``k``
best items of a row lie in the ``k`` column groups with the largest maxima, so one cheap max
reduction over the row plus a top-k over ``k`` groups replaces a full selection over the row
(twice as fast as ``torch.topk`` on 50k items, five times ``np.argpartition``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

#: columns per group for the group-maxima top-k (scorers pad catalogues to a multiple of it)
GROUP = 64
_NEG_INF = float("-inf")


def mask_rows(scores: np.ndarray | torch.Tensor, rows: sp.csr_matrix) -> None:
    """Set ``scores[i, j] = -inf`` for every stored ``(i, j)`` of ``rows`` (same shape), in place."""
    if not rows.nnz:
        return
    r = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
    if isinstance(scores, np.ndarray):
        scores[r, rows.indices] = -np.inf
    else:  # one flat fill: index_put_ with two index tensors costs ~30x more
        flat = torch.from_numpy(r * scores.stride(0) + rows.indices)
        scores.as_strided((scores.shape[0] * scores.stride(0),), (1,)).index_fill_(0, flat, _NEG_INF)


def filter_scores(
    scores: torch.Tensor, seen: sp.csr_matrix | None, allowed: torch.Tensor | None, *, finite: bool = False
) -> None:
    """In place: non-finite scores, ``seen`` items and items outside ``allowed`` become -inf.

    ``finite=True`` skips the pass over non-finite values when the caller knows there are none.
    """
    if not finite:
        scores.nan_to_num_(nan=_NEG_INF, posinf=_NEG_INF, neginf=_NEG_INF)
    if seen is not None:
        mask_rows(scores, seen)
    if allowed is not None:
        scores.masked_fill_(~allowed, _NEG_INF)


def topk_tensor(scores: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`topk` on a float32 (n, m) tensor (read, not modified)."""
    n, m = scores.shape
    k_eff = min(k, m)
    if k_eff <= 0 or n == 0:
        return np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf, dtype=np.float32)
    n_groups = m // GROUP
    if n_groups >= 4 * k_eff:
        main = scores[:, : n_groups * GROUP].view(n, n_groups, GROUP)
        _, groups = torch.topk(main.amax(dim=2), k_eff, dim=1, sorted=False)
        cand = main.gather(1, groups[:, :, None].expand(n, k_eff, GROUP)).reshape(n, k_eff * GROUP)
        cand_idx = (groups[:, :, None] * GROUP + torch.arange(GROUP)).reshape(n, k_eff * GROUP)
        if m > n_groups * GROUP:  # the columns after the last whole group are candidates too
            cand = torch.cat([cand, scores[:, n_groups * GROUP :]], dim=1)
            tail = torch.arange(n_groups * GROUP, m).expand(n, m - n_groups * GROUP)
            cand_idx = torch.cat([cand_idx, tail], dim=1)
        val, pos = torch.topk(cand, k_eff, dim=1, sorted=False)
        idx = cand_idx.gather(1, pos)
    else:
        val, idx = torch.topk(scores, k_eff, dim=1, sorted=False)
    val_np, idx_np = val.numpy(), idx.numpy()
    order = np.lexsort((idx_np, -val_np), axis=1)  # best first, equal scores by item index
    idx_np = np.take_along_axis(idx_np, order, axis=1)
    val_np = np.take_along_axis(val_np, order, axis=1).astype(np.float32, copy=False)
    idx_np[np.isneginf(val_np)] = -1
    if k_eff < k:
        idx_np = np.pad(idx_np, ((0, 0), (0, k - k_eff)), constant_values=-1)
        val_np = np.pad(val_np, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
    return idx_np, val_np


def topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``k`` best columns per row, best first.

    Entries scored ``-inf`` are never returned: their slots hold index -1 and score -inf, so a
    row with fewer than ``k`` eligible items is padded rather than filled with excluded ones.
    Equal scores inside the top-k are ordered by item index. ``scores`` must not hold NaN.
    """
    return topk_tensor(torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)), k)
