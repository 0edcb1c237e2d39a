"""Input checks and the users x k hit matrix every accuracy metric is computed from."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from vitrina.errors import ConfigError, DataValidationError


def check_topk(topk: np.ndarray, k: int | None) -> np.ndarray:
    """``topk`` cut at ``k`` as int64, after checking shape, the ``-1`` padding and duplicates.

    Item upper bounds are checked by the caller, which knows the catalogue size.
    """
    if not isinstance(topk, np.ndarray) or topk.ndim != 2 or not np.issubdtype(topk.dtype, np.integer):
        got = f"{type(topk).__name__} {getattr(topk, 'dtype', '')} ndim={getattr(topk, 'ndim', '?')}"
        raise DataValidationError(
            f"topk: expected a 2-d integer ndarray (n_users, k), got {got}; pass the indices from recommend"
        )
    width = topk.shape[1]
    if k is None:
        k = width
    if not 1 <= k <= width:
        raise ConfigError(f"k: got {k}, expected 1 <= k <= topk.shape[1] = {width}; recommend more items")
    cut = topk[:, :k].astype(np.int64, copy=False)
    if cut.size and cut.min() < -1:
        row = int(np.argwhere(cut < -1)[0, 0])
        raise DataValidationError(
            f"topk: row {row} holds {cut[row].min()}; item indices must be >= 0, or -1 for an empty slot"
        )
    ordered = np.sort(cut, axis=1)
    dup = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    if dup.any():
        row = int(np.argwhere(dup)[0, 0])
        raise DataValidationError(
            f"topk: row {row} lists an item twice ({cut[row].tolist()}); a list must hold distinct items"
        )
    return cut


def check_items(topk: np.ndarray, n_items: int, name: str) -> None:
    """Raise unless every item index in ``topk`` is below ``n_items`` (the length of ``name``)."""
    if topk.size and topk.max() >= n_items:
        raise DataValidationError(
            f"topk: item index {int(topk.max())} is out of range for {name} with {n_items} items; "
            "pass the arrays of the catalogue the model was trained on"
        )


def relevant_matrix(truth: sp.spmatrix | sp.sparray, n_users: int) -> sp.csr_matrix:
    """Binary CSR of relevant items (stored value > 0, duplicates summed) with sorted indices."""
    if not sp.issparse(truth) or truth.ndim != 2:
        raise DataValidationError(
            f"truth: expected a scipy sparse (n_users, n_items) matrix, got {type(truth).__name__}"
        )
    if truth.shape[0] != n_users:
        raise DataValidationError(
            f"truth: has {truth.shape[0]} rows but topk has {n_users}; rows must be aligned user by user"
        )
    rel = sp.csr_matrix(truth, copy=True)
    rel.sum_duplicates()
    rel.data = (rel.data > 0).astype(np.int8)
    rel.eliminate_zeros()
    rel.sort_indices()
    return rel


def row_keys(rows: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """One int64 key per (row, item) pair, ordered like (row, item) tuples."""
    return rows.astype(np.int64) * n_items + items


def contains(sorted_keys: np.ndarray, topk: np.ndarray, n_items: int) -> np.ndarray:
    """Boolean ``topk``-shaped mask: slot holds an item whose (row, item) key is in ``sorted_keys``."""
    valid = topk >= 0
    query = row_keys(np.arange(topk.shape[0])[:, None], topk, n_items)
    if sorted_keys.size == 0:
        return np.zeros(topk.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, query), sorted_keys.size - 1)
    return valid & (sorted_keys[pos] == query)


def hit_matrix(topk: np.ndarray, rel: sp.csr_matrix) -> np.ndarray:
    """Boolean (n_users, k) matrix: slot ``(u, j)`` holds an item relevant to user ``u``.

    Relevant (user, item) pairs become sorted int64 keys, so the lookup is one binary search.
    """
    n_items = rel.shape[1]
    check_items(topk, n_items, "truth")
    rows = np.repeat(np.arange(rel.shape[0]), np.diff(rel.indptr))
    return contains(row_keys(rows, rel.indices, n_items), topk, n_items)


def n_relevant(rel: sp.csr_matrix) -> np.ndarray:
    """Number of relevant items per user (int64)."""
    return np.diff(rel.indptr).astype(np.int64)


def prepare(
    topk: np.ndarray, truth: sp.spmatrix | sp.sparray, k: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validated hit matrix and relevant counts for the public accuracy functions."""
    cut = check_topk(topk, k)
    rel = relevant_matrix(truth, cut.shape[0])
    return hit_matrix(cut, rel), n_relevant(rel)


def excluded_to_nan(values: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """Mark users without a relevant item as NaN: they are left out of every accuracy mean."""
    values[n_rel == 0] = np.nan
    return values
