"""Serendipity: relevant recommendations that an obvious baseline would not have made."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from vitrina.errors import DataValidationError
from vitrina.metrics._inputs import (
    check_topk,
    contains,
    excluded_to_nan,
    hit_matrix,
    n_relevant,
    relevant_matrix,
    row_keys,
)


def check_expected(expected: np.ndarray, n_users: int, n_items: int) -> np.ndarray:
    """``expected`` as int64 after checking its shape and item range (``-1`` allowed as padding)."""
    if not isinstance(expected, np.ndarray) or expected.ndim != 2 or expected.shape[0] != n_users:
        raise DataValidationError(
            f"expected: need an integer ndarray of shape ({n_users}, k'), got "
            f"{type(expected).__name__} of shape {getattr(expected, 'shape', '?')}; pass a baseline's top-k"
        )
    if not np.issubdtype(expected.dtype, np.integer) or (
        expected.size and (expected.min() < -1 or expected.max() >= n_items)
    ):
        raise DataValidationError(
            f"expected: item indices must be integers in [-1, {n_items}), "
            f"got dtype {expected.dtype} and range [{expected.min()}, {expected.max()}]"
        )
    return expected.astype(np.int64, copy=False)


def serendipity_from_hits(
    hits: np.ndarray, n_rel: np.ndarray, topk: np.ndarray, expected: np.ndarray, n_items: int
) -> np.ndarray:
    """Per-user serendipity from a hit matrix and validated ``expected``; NaN where ``n_rel == 0``."""
    rows = np.broadcast_to(np.arange(expected.shape[0])[:, None], expected.shape)
    keep = expected >= 0
    obvious = contains(np.sort(row_keys(rows[keep], expected[keep], n_items)), topk, n_items)
    return excluded_to_nan((hits & ~obvious).sum(axis=1) / hits.shape[1], n_rel)


def serendipity(
    topk: np.ndarray,
    truth: sp.spmatrix | sp.sparray,
    expected: np.ndarray,
    *,
    k: int | None = None,
) -> np.ndarray:
    """Serendipity@k per user: ``|{j <= k : item_j relevant and item_j not in expected_u}| / k``.

    ``expected`` (n_users, k') holds each user's "obvious" recommendations, typically the Popular
    model's top-k; ``-1`` pads it. ``k`` is fixed as in precision. Users without a relevant item
    get NaN.

    >>> import numpy as np, scipy.sparse as sp
    >>> topk = np.array([[2, 0, 1], [4, 3, -1], [0, 1, 2]])
    >>> truth = sp.csr_matrix(np.array([[1, 0, 1, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]))
    >>> serendipity(topk, truth, np.array([[0, 1], [0, 1], [0, 1]]))
    array([0.33333333, 0.        ,        nan])
    """
    cut = check_topk(topk, k)
    rel = relevant_matrix(truth, cut.shape[0])
    n_items = rel.shape[1]
    obvious = check_expected(expected, cut.shape[0], n_items)
    return serendipity_from_hits(hit_matrix(cut, rel), n_relevant(rel), cut, obvious, n_items)
