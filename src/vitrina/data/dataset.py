"""``Dataset``: an interaction table bound to user/item id maps, with the matrix and sequence views
models consume."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl
import scipy.sparse as sp

from vitrina.data.columns import ITEM, TIMESTAMP, USER, WEIGHT
from vitrina.data.idmap import IdMap
from vitrina.data.interactions import validate_interactions

USER_IDX = "user_idx"
ITEM_IDX = "item_idx"


@dataclass(frozen=True, eq=False)
class Dataset:
    """Interactions with dense ``user_idx``/``item_idx`` columns, in chronological order per user.

    Rows are sorted by (user_idx, timestamp) with ties kept in the original row order, so the
    sequence view is the order a user acted in.
    """

    interactions: pl.DataFrame
    users: IdMap
    items: IdMap

    @classmethod
    def from_interactions(
        cls, interactions: pl.DataFrame, *, users: IdMap | None = None, items: IdMap | None = None
    ) -> Dataset:
        """Index a validated interaction table; ids missing from given maps raise."""
        df = validate_interactions(interactions)
        users = users or IdMap.from_values(df[USER])
        items = items or IdMap.from_values(df[ITEM])
        df = df.with_columns(
            pl.Series(USER_IDX, users.to_internal(df[USER])),
            pl.Series(ITEM_IDX, items.to_internal(df[ITEM])),
        ).sort([USER_IDX, TIMESTAMP], maintain_order=True)
        return cls(df, users, items)

    def subset(self, interactions: pl.DataFrame) -> Dataset:
        """Index another table with this dataset's id maps, dropping rows of unknown users/items."""
        df = validate_interactions(interactions)
        u = self.users.to_internal(df[USER], strict=False)
        i = self.items.to_internal(df[ITEM], strict=False)
        df = df.with_columns(pl.Series(USER_IDX, u), pl.Series(ITEM_IDX, i))
        df = df.filter((pl.col(USER_IDX) >= 0) & (pl.col(ITEM_IDX) >= 0))
        return Dataset(df.sort([USER_IDX, TIMESTAMP], maintain_order=True), self.users, self.items)

    def extended(self, other: Dataset) -> Dataset:
        """This dataset plus ``other``'s events (indexed with the same id maps, e.g. by
        :meth:`subset`), in chronological order per user; ties keep this dataset's events first."""
        if other.users is not self.users or other.items is not self.items:
            raise ValueError("Dataset.extended: the other dataset must share this one's id maps")
        df = pl.concat([self.interactions, other.interactions.select(self.interactions.columns)])
        return Dataset(df.sort([USER_IDX, TIMESTAMP], maintain_order=True), self.users, self.items)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @cached_property
    def user_idx(self) -> np.ndarray:
        return self.interactions[USER_IDX].to_numpy()

    @cached_property
    def item_idx(self) -> np.ndarray:
        return self.interactions[ITEM_IDX].to_numpy()

    @cached_property
    def matrix(self) -> sp.csr_matrix:
        """Users x items CSR of summed weights (duplicates add up)."""
        weights = self.interactions[WEIGHT].to_numpy().astype(np.float32)
        m = sp.csr_matrix(
            (weights, (self.user_idx, self.item_idx)), shape=(self.n_users, self.n_items), dtype=np.float32
        )
        m.sum_duplicates()
        return m

    @cached_property
    def seen(self) -> sp.csr_matrix:
        """Binary users x items CSR of what each user interacted with."""
        m = self.matrix.copy()
        m.data = np.ones_like(m.data)
        return m

    @cached_property
    def sequence_indptr(self) -> np.ndarray:
        """``item_idx[indptr[u]:indptr[u+1]]`` is user ``u``'s chronological sequence."""
        counts = np.bincount(self.user_idx, minlength=self.n_users)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def sequence(self, user: int) -> np.ndarray:
        return self.item_idx[self.sequence_indptr[user] : self.sequence_indptr[user + 1]]

    @cached_property
    def timestamps(self) -> np.ndarray:
        """Event times as int64 Unix seconds, aligned with ``item_idx``."""
        return self.interactions[TIMESTAMP].to_numpy().astype(np.int64)

    def sequence_times(self, user: int) -> np.ndarray:
        """Times of ``sequence(user)``'s events."""
        return self.timestamps[self.sequence_indptr[user] : self.sequence_indptr[user + 1]]

    @cached_property
    def item_popularity(self) -> np.ndarray:
        """Number of distinct users per item (length ``n_items``)."""
        return np.asarray(self.seen.sum(axis=0)).ravel()

    def __repr__(self) -> str:
        return f"Dataset(users={self.n_users}, items={self.n_items}, interactions={self.interactions.height})"
