"""Precision: the share of the list's slots that are relevant."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from vitrina.metrics._inputs import excluded_to_nan, prepare


def precision_from_hits(hits: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """Per-user precision from a boolean (n_users, k) hit matrix; NaN where ``n_rel == 0``."""
    return excluded_to_nan(hits.sum(axis=1) / hits.shape[1], n_rel)


def precision(topk: np.ndarray, truth: sp.spmatrix | sp.sparray, *, k: int | None = None) -> np.ndarray:
    """Precision@k per user: hits in the first ``k`` slots / ``k``.

    ``k`` stays fixed when slots are empty (``-1``): a short list is not rewarded for being short.
    Users without a relevant item get NaN.

    >>> import numpy as np, scipy.sparse as sp
    >>> topk = np.array([[2, 0, 1], [4, 3, -1], [0, 1, 2]])
    >>> truth = sp.csr_matrix(np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]))
    >>> precision(topk, truth, k=2)
    array([0.5, 0. , nan])
    """
    return precision_from_hits(*prepare(topk, truth, k))
