"""EASE: the closed-form shallow autoencoder of Steck (2019), "Embarrassingly Shallow Autoencoders"."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg

from vitrina.data.dataset import Dataset
from vitrina.errors import ConfigError
from vitrina.models._common import check_float, check_int, history_matrix
from vitrina.models.base import Recommender

#: default largest catalogue EASE will invert densely (40k items need ~19 GB, see ``EASE``)
MAX_ITEMS = 40_000
_BYTES_PER_CELL = 8 + 4  # float64 inverse + float32 weights


class EASE(Recommender):
    """Item-item weights ``B = I - P diag(1/diag(P))`` with ``P = (XᵀX + l2·I)⁻¹``, so ``diag(B) = 0``.

    ``X`` is the binary user x item matrix; a user's scores are their binary history times ``B``.
    The Gram matrix (counts up to the number of users) is inverted in float64 (Cholesky, in
    place) to keep the ratios to the inverse's diagonal accurate; float32 would halve that memory
    but was not chosen for lack of an accuracy check. ``B`` is stored in float32, the precision
    scores use. Memory is dense: ``n_items² x 12`` bytes at peak, so catalogues above
    ``max_items`` are refused before anything is allocated, with the memory they would need
    (use ``itemknn`` or ``als`` there, raise ``max_items``, or ``force=True`` to try anyway).
    """

    supports_history = True

    def __init__(self, l2: float = 500.0, max_items: int = MAX_ITEMS, force: bool = False) -> None:
        self.l2 = l2
        self.max_items = max_items
        self.force = force

    def _fit(self, data: Dataset, validation: Dataset | None) -> None:
        check_float("ease", "l2", self.l2, positive=True)
        check_int("ease", "max_items", self.max_items, 1)
        n = data.n_items
        if n > self.max_items and not self.force:
            gb = n * n * _BYTES_PER_CELL / 1e9
            raise ConfigError(
                f"ease: the catalogue has {n:,} items; the dense inverse would need about {gb:,.1f} GB "
                f"({n:,}² x {_BYTES_PER_CELL} bytes), above the limit of max_items={self.max_items:,}. "
                "Use itemknn or als, filter rare items first (--min-item), or if the memory is there "
                "raise the limit (ease:max_items=N) or force it (ease:force=true)."
            )
        x = data.seen.astype(np.float64)
        gram = (x.T @ x).toarray()
        gram[np.diag_indices(n)] += self.l2
        self.weights_ = ease_weights(gram)

    def _score_users(self, user_idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.seen_[user_idx] @ self.weights_)

    def _score_histories(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        return np.asarray(history_matrix(histories, len(self.items_)) @ self.weights_)

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights_}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.weights_ = state["weights"]


def ease_weights(gram: np.ndarray) -> np.ndarray:
    """``B`` (float32) from the regularised Gram matrix ``XᵀX + l2·I`` (float64, overwritten).

    Cholesky factorisation and inversion run in place; ``B`` is filled in row blocks from the
    upper triangle LAPACK leaves, so peak memory is the Gram matrix plus ``B``.
    """
    n = gram.shape[0]
    # LAPACK overwrites only Fortran-ordered input; gram is symmetric, so its transpose is the same matrix
    fortran = gram if gram.flags.f_contiguous else gram.T
    chol, info = scipy.linalg.lapack.dpotrf(fortran, lower=False, overwrite_a=True)
    if info == 0:
        inv, info = scipy.linalg.lapack.dpotri(chol, lower=False, overwrite_c=True)
    if info != 0:
        raise ConfigError(f"ease: XᵀX + l2·I is not positive definite (LAPACK info {info}); increase l2")
    scale = -1.0 / np.diag(inv)
    weights = np.empty((n, n), dtype=np.float32)
    cols = np.arange(n)
    step = max(1, (1 << 22) // max(n, 1))
    for start in range(0, n, step):
        stop = min(start + step, n)
        rows = np.arange(start, stop)[:, None]
        full = np.where(cols[None, :] >= rows, inv[start:stop, :], inv[:, start:stop].T)  # P = Pᵀ
        weights[start:stop] = full * scale[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights
