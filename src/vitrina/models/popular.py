"""Popularity baseline: the same ranking for everyone, by distinct users per item."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from vitrina.data.columns import TIMESTAMP
from vitrina.data.dataset import ITEM_IDX, USER_IDX, Dataset
from vitrina.errors import ConfigError
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

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"popularity": self.popularity_}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.popularity_ = state["popularity"]
