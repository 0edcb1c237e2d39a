"""Hit rate: did the list find anything at all."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from vitrina.metrics._inputs import excluded_to_nan, prepare


def hit_rate_from_hits(hits: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """Per-user HR from a boolean (n_users, k) hit matrix; NaN where ``n_rel == 0``."""
    return excluded_to_nan(hits.any(axis=1).astype(np.float64), n_rel)


def hit_rate(topk: np.ndarray, truth: sp.spmatrix | sp.sparray, *, k: int | None = None) -> np.ndarray:
    """HR@k per user: 1 if any of the first ``k`` slots is relevant, else 0.

    Users without a relevant item get NaN (excluded from means). With one held-out item per user
    (leave-one-out) HR@k equals Recall@k.

    >>> import numpy as np, scipy.sparse as sp
    >>> topk = np.array([[2, 0, 1], [4, 3, -1], [0, 1, 2]])
    >>> truth = sp.csr_matrix(np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]))
    >>> hit_rate(topk, truth)
    array([ 1.,  0., nan])
    >>> hit_rate(topk, truth, k=1)
    array([ 0.,  0., nan])
    """
    return hit_rate_from_hits(*prepare(topk, truth, k))
