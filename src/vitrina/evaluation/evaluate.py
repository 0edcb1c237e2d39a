"""Full-catalogue evaluation of one fitted model on held-out events."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from vitrina.data.columns import ITEM, TIMESTAMP, USER
from vitrina.data.dataset import Dataset
from vitrina.metrics import compute_metrics, per_user_metrics
from vitrina.models.base import Recommender


@dataclass(frozen=True)
class Truth:
    """Held-out relevance for the evaluated users, in the model's index space.

    Test items unknown to the training catalogue stay relevant (in an extra column no model can
    recommend), so they count as misses instead of silently vanishing.
    """

    users: np.ndarray  # internal user indices, sorted
    matrix: sp.csr_matrix  # len(users) x (n_items + 1)
    n_cold_events: int
    first_times: np.ndarray  # each user's earliest held-out event time (the request time)


def build_truth(train: Dataset, test: pl.DataFrame) -> Truth:
    u = train.users.to_internal(test[USER], strict=False)
    i = train.items.to_internal(test[ITEM], strict=False)
    known_user = u >= 0
    u, i = u[known_user], i[known_user]
    cold = i < 0
    i = np.where(cold, train.n_items, i)
    users = np.unique(u)
    rows = np.searchsorted(users, u)
    m = sp.csr_matrix((np.ones(len(u), np.float32), (rows, i)), shape=(len(users), train.n_items + 1))
    m.sum_duplicates()
    m.data[:] = 1.0
    first = np.full(len(users), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, rows, test[TIMESTAMP].to_numpy()[known_user].astype(np.int64))
    return Truth(users, m, int(cold.sum()), first)


def recommend_for_eval(model: Recommender, history: Dataset, truth: Truth, k: int) -> np.ndarray:
    """Top-k for evaluated users; models trained with a validation part rank from full histories
    (with their event times for models that read time, and the held-out event's time as the
    request time, which only a model with ``request_time`` reads)."""
    users = truth.users
    if model.uses_validation:
        histories = [history.sequence(u) for u in users]
        times = [history.sequence_times(u) for u in users] if model.uses_time else None
        requests = [int(t) for t in truth.first_times] if model.uses_time else None
        idx, _ = model.recommend_histories_indices(histories, k, times=times, requests=requests)
    else:
        idx, _ = model.recommend_indices(users, k)
    return idx


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    recommend_seconds: float
    topk: np.ndarray
    #: 95% confidence interval per metric when the users are a sample (``population`` given)
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)


def confidence_interval(values: np.ndarray, population: int, z: float = 1.959964) -> tuple[float, float]:
    """Normal-approximation interval for the mean over ``population`` users of a metric measured
    on a simple random sample of them (``values``, NaN = undefined for that user, skipped), with
    the finite-population correction: a sample that is the whole population has zero width.

    >>> confidence_interval(np.array([0.0, 1.0, 1.0, 0.0]), population=4)
    (0.5, 0.5)
    """
    kept = values[~np.isnan(values)]
    n = kept.size
    if n == 0:
        return float("nan"), float("nan")
    mean = float(kept.mean())
    if n < 2:
        return float("nan"), float("nan")
    fpc = max(0.0, (population - n) / max(population - 1, 1))
    half = z * float(kept.std(ddof=1)) / np.sqrt(n) * np.sqrt(fpc)
    return mean - half, mean + half


def evaluate(
    model: Recommender,
    history: Dataset,
    truth: Truth,
    *,
    k: int,
    item_vectors: sp.csr_matrix | np.ndarray | None = None,
    expected: np.ndarray | None = None,
    population: int | None = None,
) -> Evaluation:
    """Rank the whole catalogue for every evaluated user and compute all metrics at ``k``.

    ``history`` holds everything before the test events (train + validation), indexed with the
    model's id maps; its item popularity feeds novelty and popularity bias. ``population``: the
    users of ``truth`` are a random sample of that many; each per-user metric then gets a 95%
    confidence interval (coverage, a catalogue-level metric, gets none).
    """
    start = time.perf_counter()
    topk = recommend_for_eval(model, history, truth, k)
    seconds = time.perf_counter() - start
    inputs: dict[str, Any] = {
        "k": k,
        "item_popularity": np.append(history.item_popularity, 0),
        "n_train_users": history.n_users,
        "item_vectors": _pad_rows(item_vectors) if item_vectors is not None else None,
        "expected": expected,
    }
    metrics = compute_metrics(topk, truth.matrix, n_items=history.n_items, **inputs)
    ci95 = {}
    if population is not None:
        per_user = per_user_metrics(topk, truth.matrix, **inputs)
        ci95 = {name: confidence_interval(v, population) for name, v in per_user.items()}
    return Evaluation(metrics, seconds, topk, ci95)


def _pad_rows(vectors: sp.csr_matrix | np.ndarray) -> sp.csr_matrix | np.ndarray:
    """One empty row for the unknown-item column of the truth matrix."""
    if sp.issparse(vectors):
        return sp.vstack([vectors, sp.csr_matrix((1, vectors.shape[1]))]).tocsr()
    return np.vstack([vectors, np.zeros((1, vectors.shape[1]), vectors.dtype)])


def history_dataset(model: Recommender, interactions: pl.DataFrame) -> Dataset:
    """``interactions`` indexed with a fitted model's id maps (unknown users/items dropped)."""
    ds = Dataset(pl.DataFrame(), model.users_, model.items_)
    return ds.subset(interactions)


__all__ = ["Evaluation", "Truth", "build_truth", "confidence_interval", "evaluate", "history_dataset"]
