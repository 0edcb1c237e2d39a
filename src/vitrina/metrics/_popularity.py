"""Popularity-based beyond-accuracy metrics: novelty (self-information) and ARP (popularity bias)."""

from __future__ import annotations

import numpy as np

from vitrina.errors import ConfigError, DataValidationError
from vitrina.metrics._inputs import check_items, check_topk


def check_popularity(item_popularity: np.ndarray, n_users: int | None = None) -> np.ndarray:
    """``item_popularity`` as float64 after checking it is 1-d, finite, >= 0 and <= ``n_users``."""
    pop = np.asarray(item_popularity, dtype=np.float64)
    if pop.ndim != 1 or not np.isfinite(pop).all() or (pop < 0).any():
        raise DataValidationError(
            "item_popularity: expected a 1-d array of non-negative user counts per item "
            f"(Dataset.item_popularity), got shape {pop.shape}"
        )
    if n_users is not None:
        if n_users < 1:
            raise ConfigError(f"n_users: got {n_users}, expected >= 1 (number of training users)")
        if pop.size and pop.max() > n_users:
            raise DataValidationError(
                f"item_popularity: max {pop.max():g} exceeds n_users={n_users}; popularity must count "
                "distinct training users, and n_users must be the training user count"
            )
    return pop


def slot_mean(values: np.ndarray, topk: np.ndarray) -> np.ndarray:
    """Per-user mean of ``values[item]`` over filled slots; NaN for a user with no filled slot."""
    valid = topk >= 0
    per_slot = np.where(valid, values[np.where(valid, topk, 0)], 0.0)
    count = valid.sum(axis=1)
    out = per_slot.sum(axis=1) / np.maximum(count, 1)
    out[count == 0] = np.nan
    return out


def novelty_of(topk: np.ndarray, pop: np.ndarray, n_users: int) -> np.ndarray:
    """Per-user novelty of validated lists; unseen items count as seen by one user."""
    return slot_mean(-np.log2(np.maximum(pop, 1.0) / n_users), topk)


def novelty(
    topk: np.ndarray, item_popularity: np.ndarray, n_users: int, *, k: int | None = None
) -> np.ndarray:
    """Novelty@k per user: mean self-information ``-log2(p_i)`` of the recommended items.

    ``p_i = item_popularity[i] / n_users`` is the share of training users who interacted with
    item ``i``; items nobody interacted with use ``p_i = 1 / n_users`` so the value stays finite.
    Empty (``-1``) slots are skipped; a user with no filled slot gets NaN.

    >>> import numpy as np
    >>> novelty(np.array([[0, 1], [2, -1]]), np.array([8, 2, 0]), n_users=8)
    array([1., 3.])
    """
    cut = check_topk(topk, k)
    pop = check_popularity(item_popularity, n_users)
    check_items(cut, pop.size, "item_popularity")
    return novelty_of(cut, pop, n_users)


def average_popularity(topk: np.ndarray, item_popularity: np.ndarray, *, k: int | None = None) -> np.ndarray:
    """ARP@k per user: mean training popularity (user count) of the recommended items.

    Higher means a stronger bias towards popular items. Empty (``-1``) slots are skipped; a user
    with no filled slot gets NaN.

    >>> import numpy as np
    >>> average_popularity(np.array([[0, 1], [2, -1]]), np.array([8, 2, 0]))
    array([5., 0.])
    """
    cut = check_topk(topk, k)
    pop = check_popularity(item_popularity)
    check_items(cut, pop.size, "item_popularity")
    return slot_mean(pop, cut)
