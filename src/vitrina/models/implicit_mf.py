"""Matrix factorisation baselines backed by the ``implicit`` library (CPU): ALS and BPR.

Scores are ``user_factors @ item_factorsᵀ``; the factors are also exposed as query and item
vectors (``user_vectors``, ``history_vectors``, ``item_vectors``) for ANN retrieval in serving.
``implicit`` warns when BLAS runs several threads (its own threads already parallelise over
users), so fitting and solving run with BLAS limited to one thread; progress bars are off.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from threadpoolctl import ThreadpoolController, threadpool_limits

from vitrina.data.dataset import Dataset
from vitrina.models._common import check_float, check_int, history_matrix
from vitrina.models.base import Recommender

_CONTROLLER: list[ThreadpoolController] = []


def _blas() -> ThreadpoolController:
    """One controller of the loaded BLAS libraries, built on first use: ``threadpool_limits``
    inspects every loaded library at each call (about 1.2 ms, once per served history)."""
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


class _ImplicitMF(Recommender):
    """Shared scoring, vectors and state of the two factor models: score = query · item factors."""

    supports_history = True
    user_factors_: np.ndarray
    item_factors_: np.ndarray

    @abstractmethod
    def _history_factors(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Query factors (len(histories) x d, float32) folded in from item-index histories."""

    def _score_users(self, user_idx: np.ndarray) -> np.ndarray:
        return self.user_factors_[user_idx] @ self.item_factors_.T

    def _score_histories(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        return self._history_factors(histories) @ self.item_factors_.T

    def _item_matrix(self) -> np.ndarray:
        return self.item_factors_

    def _user_queries(self, user_idx: np.ndarray) -> np.ndarray:
        return self.user_factors_[user_idx]

    def _history_queries(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        return self._history_factors(histories)

    def item_vectors(self) -> np.ndarray:
        """Item factors (n_items x d, float32)."""
        self._check_fitted()
        return self.item_factors_

    def user_vectors(self, user_idx: np.ndarray) -> np.ndarray:
        """User factors (len(user_idx) x d, float32) of known users."""
        self._check_fitted()
        return self.user_factors_[np.asarray(user_idx, dtype=np.int64)]

    def history_vectors(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Query factors (len(histories) x d, float32) that ``recommend_for_history`` scores with."""
        self._check_fitted()
        return self._history_factors(histories)

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.user_factors_ = state["user_factors"]
        self.item_factors_ = state["item_factors"]


class ALS(_ImplicitMF):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008) via ``implicit.cpu.als``.

    Confidence is ``alpha x`` the summed ``weight`` of a user-item pair. After training, user
    factors are recomputed with one exact least-squares step (``implicit``'s Cholesky
    ``recalculate_user``; training itself uses conjugate-gradient steps). A history given at
    serving time goes through the very same solve, so ``recommend_for_history`` with a known
    user's full history reproduces that user's scores (up to float32 round-off in the product).
    ``num_threads=0`` uses every core; results do not depend on it (each user's and item's solve
    is independent of the others).
    """

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.01,
        alpha: float = 1.0,
        iterations: int = 15,
        seed: int = 0,
        num_threads: int = 0,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed
        self.num_threads = num_threads

    def _fit(self, data: Dataset, validation: Dataset | None) -> None:
        check_int("als", "factors", self.factors, 1)
        check_float("als", "regularization", self.regularization, positive=False)
        check_float("als", "alpha", self.alpha, positive=True)
        check_int("als", "iterations", self.iterations, 1)
        check_int("als", "seed", self.seed, 0)
        check_int("als", "num_threads", self.num_threads, 0)
        with threadpool_limits(1, "blas"):
            model = self._solver()
            model.fit(data.matrix, show_progress=False)
            users = model.recalculate_user(np.arange(data.n_users), data.matrix)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self.user_factors_ = np.ascontiguousarray(users, dtype=np.float32)

    def _solver(self) -> AlternatingLeastSquares:
        return AlternatingLeastSquares(
            factors=self.factors,
            regularization=self.regularization,
            alpha=self.alpha,
            iterations=self.iterations,
            num_threads=self.num_threads,
            random_state=self.seed,
        )

    def _history_factors(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        with _blas().limit(limits=1, user_api="blas"):
            users = self._fold_in_solver().recalculate_user(
                np.arange(len(histories)), history_matrix(histories, len(self.items_), binary=False)
            )
        return np.asarray(users, dtype=np.float32)

    def _fold_in_solver(self) -> AlternatingLeastSquares:
        """A solver holding the item factors and their Gram matrix ``YᵀY``, built once per set of
        factors: ``YᵀY`` is a pass over every item (3 ms per served history at 115k items, ~30 ms
        at 1M), the same for every request."""
        solver: AlternatingLeastSquares | None = getattr(self, "_fold_in", None)
        if solver is None or solver.item_factors is not self.item_factors_:
            solver = self._solver()
            solver.item_factors = self.item_factors_
            _ = solver.YtY  # computed and kept by the solver
            self._fold_in = solver
        return solver


class BPR(_ImplicitMF):
    """Bayesian personalised ranking (Rendle et al. 2009) via ``implicit.cpu.bpr``, on the binary matrix.

    ``implicit`` appends an item-bias column to the item factors (and a constant 1 to the user
    factors), so both have ``factors + 1`` columns. Its SGD updates factors from several threads
    without locks, which makes multi-threaded runs irreproducible; ``num_threads`` therefore
    defaults to 1 (the same seed gives the same factors) and larger values trade that for speed.

    BPR has no closed-form user step, so an ad-hoc history is folded in as the mean of its items'
    factors (bias column included): cheap and deterministic, but only an approximation of the
    factor SGD would learn, so ``recommend_for_history`` agrees with ``recommend`` for a known
    user only loosely (about half of the top-10 on MovieLens-100k).
    """

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.01,
        regularization: float = 0.01,
        iterations: int = 100,
        seed: int = 0,
        num_threads: int = 1,
    ) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.seed = seed
        self.num_threads = num_threads

    def _fit(self, data: Dataset, validation: Dataset | None) -> None:
        check_int("bpr", "factors", self.factors, 1)
        check_float("bpr", "learning_rate", self.learning_rate, positive=True)
        check_float("bpr", "regularization", self.regularization, positive=False)
        check_int("bpr", "iterations", self.iterations, 1)
        check_int("bpr", "seed", self.seed, 0)
        check_int("bpr", "num_threads", self.num_threads, 0)
        with threadpool_limits(1, "blas"):
            model = BayesianPersonalizedRanking(
                factors=self.factors,
                learning_rate=self.learning_rate,
                regularization=self.regularization,
                iterations=self.iterations,
                num_threads=self.num_threads,
                random_state=self.seed,
            )
            model.fit(data.seen, show_progress=False)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)

    def _history_factors(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        rows = history_matrix(histories, len(self.items_))
        lengths = np.maximum(np.diff(rows.indptr), 1).astype(np.float32)
        return np.asarray((rows @ self.item_factors_) / lengths[:, None], dtype=np.float32)
