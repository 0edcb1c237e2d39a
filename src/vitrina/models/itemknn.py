"""Item-item k-nearest-neighbours with shrunk cosine similarity.

``sim(i, j) = x_i · x_j / (||x_i|| ||x_j|| + shrinkage)`` over item columns of the user x item
matrix; each item keeps its ``k_neighbors`` most similar items (a sparse matrix with a zero
diagonal) and a user's scores are their binary history vector times that matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from vitrina.data.dataset import Dataset
from vitrina.errors import ConfigError
from vitrina.models._common import history_matrix
from vitrina.models.base import Recommender

_BLOCK_PAIRS = 1 << 22  # (user, item) pairs visited per block of the product: bounds fit memory


class ItemKNN(Recommender):
    """Item-based collaborative filtering (Sarwar et al. 2001) with shrinkage.

    ``k_neighbors``: similar items kept per item. ``shrinkage``: added to the cosine denominator,
    which pulls similarities of rarely co-consumed item pairs towards zero. ``weighted``: compute
    similarities on the summed ``weight`` column instead of the binary matrix; scoring always
    uses the binary history, so a history given at serving time scores exactly like the same
    user's training history.
    """

    supports_history = True

    def __init__(self, k_neighbors: int = 100, shrinkage: float = 10.0, weighted: bool = False) -> None:
        self.k_neighbors = k_neighbors
        self.shrinkage = shrinkage
        self.weighted = weighted

    def _fit(self, data: Dataset, validation: Dataset | None) -> None:
        if (
            isinstance(self.k_neighbors, bool)
            or not isinstance(self.k_neighbors, int)
            or self.k_neighbors < 1
        ):
            raise ConfigError(f"itemknn: k_neighbors must be an integer >= 1, got {self.k_neighbors!r}")
        if not np.isfinite(self.shrinkage) or self.shrinkage < 0:
            raise ConfigError(f"itemknn: shrinkage must be a finite number >= 0, got {self.shrinkage!r}")
        x = (data.matrix if self.weighted else data.seen).astype(np.float64)
        self.similarity_ = item_similarity(x, self.k_neighbors, self.shrinkage)

    def _score_users(self, user_idx: np.ndarray) -> np.ndarray:
        return (self.seen_[user_idx] @ self.similarity_).toarray()

    def _score_histories(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        return (history_matrix(histories, len(self.items_)) @ self.similarity_).toarray()

    def _get_state(self) -> dict[str, np.ndarray]:
        s = self.similarity_
        return {
            "data": s.data,
            "indices": s.indices.astype(np.int64),
            "indptr": s.indptr.astype(np.int64),
            "shape": np.array(s.shape, dtype=np.int64),
        }

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        shape = tuple(int(v) for v in state["shape"])
        self.similarity_ = sp.csr_matrix((state["data"], state["indices"], state["indptr"]), shape=shape)


def item_similarity(x: sp.csr_matrix, k_neighbors: int, shrinkage: float) -> sp.csr_matrix:
    """Top-``k_neighbors`` shrunk cosine per item (row), float32 CSR with a zero diagonal; equal
    similarities keep the lower item index.

    ``XᵀX`` is symmetric, so rows of one item block are computed at once as a sparse product and
    pruned to their top-k positive entries without densifying: the work grows with the
    co-occurring pairs, not with items², and a block is cut when its rows would visit
    ``_BLOCK_PAIRS`` (user, item) pairs, which bounds memory for large catalogues.
    """
    n_items = x.shape[1]
    xt = x.T.tocsr()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
    k = min(k_neighbors, max(n_items - 1, 1))
    # pairs each item's row of the product visits: an upper bound on its stored entries
    visits = np.cumsum(xt @ np.diff(x.indptr).astype(np.float64))
    rows, cols, vals = [], [], []
    start = 0
    while start < n_items:
        done = visits[start - 1] if start else 0.0
        stop = min(max(start + 1, int(np.searchsorted(visits, done + _BLOCK_PAIRS, side="right"))), n_items)
        dots = xt[start:stop] @ x
        r = np.repeat(np.arange(stop - start), np.diff(dots.indptr))
        c, d = dots.indices, dots.data
        denom = norms[start + r] * norms[c] + shrinkage
        sim = np.divide(d, denom, out=np.zeros_like(d), where=denom > 0)
        keep = (sim > 0) & (c != r + start)
        r, c, sim = r[keep], c[keep], sim[keep]
        order = np.lexsort((c, -sim, r))  # by row, best first, equal scores by item index
        r, c, sim = r[order], c[order], sim[order]
        top = np.arange(len(r)) - np.searchsorted(r, np.arange(stop - start))[r] < k
        rows.append(r[top] + start)
        cols.append(c[top])
        vals.append(sim[top])
        start = stop
    sim_csr = sp.csr_matrix(
        (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_items, n_items),
    )
    sim_csr.sort_indices()
    return sim_csr
