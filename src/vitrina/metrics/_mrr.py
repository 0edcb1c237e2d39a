"""Reciprocal rank of the first hit."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from vitrina.metrics._inputs import excluded_to_nan, prepare


def mrr_from_hits(hits: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """Per-user reciprocal rank from a boolean (n_users, k) hit matrix; NaN where ``n_rel == 0``."""
    first = hits.argmax(axis=1)
    return excluded_to_nan(np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0), n_rel)


def mrr(topk: np.ndarray, truth: sp.spmatrix | sp.sparray, *, k: int | None = None) -> np.ndarray:
    """RR@k per user: ``1 / rank`` of the first relevant slot within ``k``, 0 if none (mean: MRR@k).

    Users without a relevant item get NaN.

    >>> import numpy as np, scipy.sparse as sp
    >>> topk = np.array([[2, 0, 1], [4, 3, -1], [0, 1, 2]])
    >>> truth = sp.csr_matrix(np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]))
    >>> mrr(topk, truth)
    array([0.5, 0. , nan])
    """
    return mrr_from_hits(*prepare(topk, truth, k))
