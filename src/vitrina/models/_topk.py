"""Top-k selection over score blocks with masks applied before the cut."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def mask_rows(scores: np.ndarray, rows: sp.csr_matrix) -> None:
    """Set ``scores[i, j] = -inf`` for every stored ``(i, j)`` of ``rows`` (same shape), in place."""
    counts = np.diff(rows.indptr)
    if rows.nnz:
        scores[np.repeat(np.arange(rows.shape[0]), counts), rows.indices] = -np.inf


def topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``k`` best columns per row, best first.

    Entries scored ``-inf`` are never returned: their slots hold index -1 and score -inf, so a
    row with fewer than ``k`` eligible items is padded rather than filled with excluded ones.
    Equal scores inside the top-k are ordered by item index.
    """
    n, m = scores.shape
    k_eff = min(k, m)
    if k_eff <= 0:
        return np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf, dtype=np.float32)
    if k_eff < m:
        part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
    else:
        part = np.broadcast_to(np.arange(m), (n, m)).copy()
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    val = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
    idx[~np.isfinite(val) & (val < 0)] = -1
    if k_eff < k:
        idx = np.pad(idx, ((0, 0), (0, k - k_eff)), constant_values=-1)
        val = np.pad(val, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
    return idx, val
