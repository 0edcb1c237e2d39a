"""Catalogue coverage: how much of the catalogue the lists reach."""

from __future__ import annotations

import numpy as np

from vitrina.errors import ConfigError
from vitrina.metrics._inputs import check_items, check_topk


def coverage_of(topk: np.ndarray, n_items: int) -> float:
    """Coverage of validated lists: distinct items shown / ``n_items``."""
    return np.unique(topk[topk >= 0]).size / n_items


def coverage(topk: np.ndarray, n_items: int, *, k: int | None = None) -> float:
    """Coverage@k: fraction of the ``n_items`` catalogue that appears in at least one top-k list.

    >>> import numpy as np
    >>> coverage(np.array([[2, 0, 1], [4, 3, -1], [0, 1, 2]]), 10)
    0.5
    >>> coverage(np.array([[2, 0, 1], [4, 3, -1], [0, 1, 2]]), 10, k=1)
    0.3
    """
    if n_items < 1:
        raise ConfigError(f"n_items: got {n_items}, expected >= 1 (the catalogue size)")
    cut = check_topk(topk, k)
    check_items(cut, n_items, "the catalogue")
    return coverage_of(cut, n_items)
