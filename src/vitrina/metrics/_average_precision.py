"""Average precision, the per-user term of MAP@k."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from vitrina.metrics._inputs import excluded_to_nan, prepare


def average_precision_from_hits(hits: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """Per-user AP from a boolean (n_users, k) hit matrix; NaN where ``n_rel == 0``."""
    k = hits.shape[1]
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    total = (precision_at * hits).sum(axis=1)
    return excluded_to_nan(total / np.maximum(np.minimum(n_rel, k), 1), n_rel)


def average_precision(
    topk: np.ndarray, truth: sp.spmatrix | sp.sparray, *, k: int | None = None
) -> np.ndarray:
    """AP@k per user: sum of precision@i over hit ranks i <= k, divided by ``min(k, n_relevant)``.

    The ``min`` lets a perfect list score 1 when a user has more relevant items than ``k``. Users
    without a relevant item get NaN; the mean over users is MAP@k.

    >>> import numpy as np, scipy.sparse as sp
    >>> topk = np.array([[2, 0, 1], [4, 3, -1], [0, 1, 2]])
    >>> truth = sp.csr_matrix(np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]))
    >>> average_precision(topk, truth)
    array([0.25, 0.  ,  nan])
    """
    return average_precision_from_hits(*prepare(topk, truth, k))
