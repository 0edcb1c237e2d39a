"""Recall: the share of a user's relevant items the list found."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from vitrina.metrics._inputs import excluded_to_nan, prepare


def recall_from_hits(hits: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """Per-user recall from a boolean (n_users, k) hit matrix; NaN where ``n_rel == 0``."""
    return excluded_to_nan(hits.sum(axis=1) / np.maximum(n_rel, 1), n_rel)


def recall(topk: np.ndarray, truth: sp.spmatrix | sp.sparray, *, k: int | None = None) -> np.ndarray:
    """Recall@k per user: hits in the first ``k`` slots / number of relevant items.

    The denominator is the full relevant count, not ``min(k, n_relevant)``, so a user with more
    relevant items than ``k`` cannot reach 1. Users without a relevant item get NaN.

    >>> import numpy as np, scipy.sparse as sp
    >>> topk = np.array([[2, 0, 1], [4, 3, -1], [0, 1, 2]])
    >>> truth = sp.csr_matrix(np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]))
    >>> recall(topk, truth)
    array([0.5, 0. , nan])
    """
    return recall_from_hits(*prepare(topk, truth, k))
