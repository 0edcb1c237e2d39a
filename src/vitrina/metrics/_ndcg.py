"""Normalised discounted cumulative gain with binary gains."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from vitrina.metrics._inputs import excluded_to_nan, prepare


def ndcg_from_hits(hits: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """Per-user NDCG from a boolean (n_users, k) hit matrix; NaN where ``n_rel == 0``."""
    k = hits.shape[1]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits @ discount
    ideal = np.concatenate([[1.0], np.cumsum(discount)])[np.minimum(n_rel, k)]
    return excluded_to_nan(dcg / ideal, n_rel)


def ndcg(topk: np.ndarray, truth: sp.spmatrix | sp.sparray, *, k: int | None = None) -> np.ndarray:
    """NDCG@k per user: DCG / IDCG with gain 1 per relevant item and discount ``1 / log2(rank + 1)``.

    IDCG puts ``min(k, n_relevant)`` hits at the top ranks, so a perfect list scores 1 even when a
    user has more relevant items than ``k``. Users without a relevant item get NaN.

    >>> import numpy as np, scipy.sparse as sp
    >>> topk = np.array([[2, 0, 1], [4, 3, -1], [0, 1, 2]])
    >>> truth = sp.csr_matrix(np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]))
    >>> ndcg(topk, truth).round(4)
    array([0.3869, 0.    ,    nan])
    """
    return ndcg_from_hits(*prepare(topk, truth, k))
