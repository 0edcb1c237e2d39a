"""Helpers shared by models: hyper-parameter checks and the histories x items matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from vitrina.errors import ConfigError


def check_int(model: str, name: str, value: Any, minimum: int) -> None:
    """Refuse ``value`` unless it is an integer >= ``minimum`` (booleans are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{model}: {name} must be an integer >= {minimum}, got {value!r}")


def check_float(model: str, name: str, value: Any, *, positive: bool) -> None:
    """Refuse ``value`` unless it is a finite number > 0 (``positive``) or >= 0."""
    bound = "> 0" if positive else ">= 0"
    ok = (
        isinstance(value, int | float | np.number)
        and np.isfinite(value)
        and (value > 0 if positive else value >= 0)
    )
    if isinstance(value, bool) or not ok:
        raise ConfigError(f"{model}: {name} must be a finite number {bound}, got {value!r}")


def history_matrix(histories: Sequence[np.ndarray], n_items: int, *, binary: bool = True) -> sp.csr_matrix:
    """Histories x items CSR with sorted indices: ``binary`` like ``Dataset.seen``, else repeat
    counts like ``Dataset.matrix`` for unit weights. Shared by the models that score histories."""
    lengths = np.array([len(h) for h in histories], dtype=np.int64)
    cols = np.concatenate(histories).astype(np.int64) if len(histories) else np.zeros(0, np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    m = sp.csr_matrix((np.ones(len(cols), np.float32), cols, indptr), shape=(len(histories), n_items))
    m.sum_duplicates()
    if binary:
        m.data[:] = 1.0
    return m
