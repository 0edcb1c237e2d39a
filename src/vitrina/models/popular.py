"""Popularity baseline: the same ranking for everyone, by distinct users per item."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import scipy.sparse as sp

from vitrina.data.columns import TIMESTAMP
from vitrina.data.dataset import ITEM_IDX, USER_IDX, Dataset
from vitrina.errors import ConfigError
from vitrina.models._common import history_matrix
from vitrina.models.base import Recommender

_DAY = 86_400


class Popular(Recommender):
    """Items ranked by the number of distinct users who interacted with them.

    ``days``: count only events in the last ``days`` days before the newest timestamp of the
    training data (``None`` = all time). Timestamps are Unix seconds; for order-only data
    (positions) "last N days" has no meaning, so leave it ``None``.
    """

    supports_history = True
    item_to_item = False  # the same list for every history

    def __init__(self, days: float | None = None) -> None:
        self.days = days

    def _fit(self, data: Dataset, validation: Dataset | None) -> None:
        df = data.interactions
        if self.days is not None:
            if self.days <= 0:
                raise ConfigError(f"popular: days must be > 0 or None, got {self.days}")
            cutoff = df[TIMESTAMP].max() - self.days * _DAY
            df = df.filter(pl.col(TIMESTAMP) > cutoff)
        counts = df.select(USER_IDX, ITEM_IDX).unique().group_by(ITEM_IDX).len()
        pop = np.zeros(data.n_items, dtype=np.float32)
        pop[counts[ITEM_IDX].to_numpy()] = counts["len"].to_numpy()
        self.popularity_ = pop

    def _score_users(self, user_idx: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity_, (len(user_idx), len(self.popularity_)))

    def _score_histories(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        return self._score_users(np.zeros(len(histories), dtype=np.int64))

    def recommend_indices(
        self, user_idx: np.ndarray, k: int, *, exclude_seen: bool = True, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`Recommender.recommend_indices`, in O(users x k + their seen items), no catalogue pass."""
        self._check_fitted()
        user_idx = np.asarray(user_idx, dtype=np.int64)
        seen = self.seen_[user_idx] if exclude_seen else None
        return self._rank_fixed(len(user_idx), seen, k, allowed)

    def recommend_histories_indices(
        self,
        histories: Sequence[np.ndarray],
        k: int,
        *,
        exclude_seen: bool = True,
        allowed: np.ndarray | None = None,
        times: Sequence[np.ndarray] | None = None,
        requests: Sequence[int | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`Recommender.recommend_histories_indices`, in O(histories x k + their items);
        popularity reads no event times."""
        self._check_fitted()
        seen = history_matrix(list(histories), len(self.items_)) if exclude_seen else None
        return self._rank_fixed(len(histories), seen, k, allowed)

    def _rank_fixed(
        self, n: int, seen: sp.csr_matrix | None, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Everyone's list is the global ranking minus their seen items: a user with ``s`` seen
        items takes the first ``k`` unseen of the top ``k + s`` eligible items."""
        pop = self.popularity_
        order = np.lexsort((np.arange(len(pop)), -pop))  # most popular first, ties by item index
        if allowed is not None:
            order = order[np.asarray(allowed, dtype=bool)[order]]
        position = np.full(len(pop), len(pop), dtype=np.int64)
        position[order] = np.arange(len(order))
        n_seen = np.zeros(n, np.int64) if seen is None else np.diff(seen.indptr)
        width = np.minimum(k + n_seen, len(order))  # candidates per user
        starts = np.concatenate([[0], np.cumsum(width)])
        local = np.arange(starts[-1]) - np.repeat(starts[:-1], width)
        keep = np.ones(starts[-1], dtype=bool)
        if seen is not None and seen.nnz:
            owner = np.repeat(np.arange(n), n_seen)
            pos = position[seen.indices]
            inside = pos < width[owner]
            keep[starts[:-1][owner[inside]] + pos[inside]] = False
        row = np.repeat(np.arange(n), width)[keep]
        items = order[local[keep]]
        counts = np.bincount(row, minlength=n)
        rank = np.arange(len(items)) - np.repeat(np.cumsum(counts) - counts, counts)
        take = rank < k
        idx = np.full((n, k), -1, dtype=np.int64)
        val = np.full((n, k), -np.inf, dtype=np.float32)
        idx[row[take], rank[take]] = items[take]
        val[row[take], rank[take]] = pop[items[take]]
        return idx, val

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"popularity": self.popularity_}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.popularity_ = state["popularity"]
