"""One call to evaluate a model of your own on a split, exactly as ``vitrina benchmark`` does."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from vitrina.data.columns import ITEM, USER
from vitrina.data.splits import Split
from vitrina.errors import ConfigError
from vitrina.evaluation.evaluate import Evaluation, build_truth, evaluate, history_dataset
from vitrina.models.base import Recommender, check_k
from vitrina.models.registry import make_model


def history_of(split: Split) -> pl.DataFrame:
    """Everything before the test events: train + validation."""
    return pl.concat([split.train, split.validation], how="vertical_relaxed")


def fit_on_split(model: Recommender, split: Split) -> Recommender:
    """The benchmark's protocol: early-stopping models train on train and stop on validation;
    every other model trains on train + validation."""
    if model.uses_validation:
        return model.fit(split.train, validation=split.validation)
    return model.fit(history_of(split))


def evaluate_model(
    model: Recommender,
    split: Split,
    *,
    k: int = 10,
    fit: bool = True,
    item_vectors: sp.csr_matrix | np.ndarray | None = None,
) -> dict[str, Any]:
    """Fit ``model`` on ``split`` (unless ``fit=False``: it is already fitted) and rank the full
    catalogue for every test user; returns every metric at ``k`` (``"ndcg@10"``, ...) plus
    ``n_users_evaluated``, ``recommend_seconds`` and ``test_events_cold_items``.

    Serendipity is measured against the most popular unseen items; ILD needs ``item_vectors``
    (one row per item of the model's catalogue, in its index order).

    >>> from vitrina.models.popular import Popular  # doctest: +SKIP
    >>> evaluate_model(Popular(), leave_one_out(events))["ndcg@10"]  # doctest: +SKIP
    """
    k = check_k(k)
    if not isinstance(model, Recommender):
        raise ConfigError(f"model: expected a vitrina Recommender, got {type(model).__name__}")
    if not isinstance(split, Split):
        raise ConfigError(
            f"split: expected a vitrina Split (e.g. from leave_one_out), got {type(split).__name__}"
        )
    if fit:
        fit_on_split(model, split)
    result, n_cold = score_on_split(model, split, k=k, item_vectors=item_vectors)
    return {
        **result.metrics,
        "recommend_seconds": result.recommend_seconds,
        "test_events_cold_items": n_cold,
    }


def score_on_split(
    model: Recommender,
    split: Split,
    *,
    k: int,
    item_vectors: sp.csr_matrix | np.ndarray | None = None,
    expected: pl.DataFrame | None = None,
    population: int | None = None,
) -> tuple[Evaluation, int]:
    """A fitted model's metrics on ``split.test`` and the number of test events with cold items.
    ``expected`` (the popular baseline's lists, see :func:`popular_expectation`) is computed when
    not given. ``population``: the test users are a random sample of that many (confidence
    intervals, see :func:`~vitrina.evaluation.evaluate.evaluate`)."""
    history_df = history_of(split)
    if expected is None:
        expected = popular_expectation(history_df, split.test, k)
    history = history_dataset(model, history_df)
    truth = build_truth(history, split.test)
    internal = _to_internal(expected, model, truth.users)
    result = evaluate(
        model, history, truth, k=k, item_vectors=item_vectors, expected=internal, population=population
    )
    return result, truth.n_cold_events


def popular_expectation(history: pl.DataFrame, test: pl.DataFrame, k: int) -> pl.DataFrame:
    """The obvious recommendations (most popular unseen items) per test user, for serendipity."""
    popular = make_model("popular").fit(history)
    users = test[USER].unique(maintain_order=True)
    known = users.filter(pl.Series(popular.users_.to_internal(users, strict=False) >= 0))
    return popular.recommend(known, k)


def _to_internal(expected: pl.DataFrame, model: Recommender, users: np.ndarray) -> np.ndarray:
    """Expected recommendations as an (n_users, k) array in the model's index space (-1 = none)."""
    k = int(expected["rank"].max() or 1)
    out = np.full((len(users), k), -1, dtype=np.int64)
    u = model.users_.to_internal(expected[USER], strict=False)
    i = model.items_.to_internal(expected[ITEM], strict=False)
    rows = np.searchsorted(users, u)
    ok = (u >= 0) & (i >= 0) & (rows < len(users))
    ok[ok] &= users[rows[ok]] == u[ok]
    out[rows[ok], expected["rank"].to_numpy()[ok] - 1] = i[ok]
    return out
