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

_BLOCK_FLOATS = 1 << 22  # dense similarity floats per block (32 MB in float64): bounds fit memory


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
    """Top-``k_neighbors`` shrunk cosine per item (row), float32 CSR with a zero diagonal.

    ``XᵀX`` is symmetric, so rows of one item block are computed at once (a sparse product,
    densified to at most ``_BLOCK_FLOATS`` values), pruned to their top-k positive entries and
    stacked: memory stays bounded for large catalogues.
    """
    n_items = x.shape[1]
    xt = x.T.tocsr()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
    k = min(k_neighbors, max(n_items - 1, 1))
    step = max(1, _BLOCK_FLOATS // max(n_items, 1))
    rows, cols, vals = [], [], []
    for start in range(0, n_items, step):
        stop = min(start + step, n_items)
        dots = (xt[start:stop] @ x).toarray()
        denom = norms[start:stop, None] * norms[None, :] + shrinkage
        sim = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
        sim[np.arange(stop - start), np.arange(start, stop)] = 0.0
        top = (
            np.argpartition(-sim, k - 1, axis=1)[:, :k]
            if k < n_items
            else np.tile(np.arange(n_items), (stop - start, 1))
        )
        top_vals = np.take_along_axis(sim, top, axis=1)
        keep = top_vals > 0
        rows.append(np.broadcast_to(np.arange(start, stop)[:, None], top.shape)[keep])
        cols.append(top[keep])
        vals.append(top_vals[keep])
    sim_csr = sp.csr_matrix(
        (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_items, n_items),
    )
    sim_csr.sort_indices()
    return sim_csr
