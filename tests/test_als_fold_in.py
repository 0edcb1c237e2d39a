"""ALS folds a served history in with a solver built once per set of item factors (its Gram matrix
is a pass over every item): same factors as a fresh solve, rebuilt when the factors change."""

from __future__ import annotations

import numpy as np
import polars as pl

from vitrina.models._common import history_matrix
from vitrina.models.implicit_mf import ALS


def _log(seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = 3_000
    return pl.DataFrame(
        {
            "user_id": rng.integers(0, 150, n),
            "item_id": rng.integers(0, 400, n),
            "timestamp": np.arange(n),
            "weight": np.ones(n),
        }
    )


def _fresh_solve(model: ALS, histories: list[np.ndarray]) -> np.ndarray:
    solver = model._solver()
    solver.item_factors = model.item_factors_
    rows = history_matrix(histories, len(model.items_), binary=False)
    return np.asarray(solver.recalculate_user(np.arange(len(histories)), rows), dtype=np.float32)


def test_history_factors_equal_a_fresh_solve_and_follow_a_refit() -> None:
    model = ALS(factors=8, iterations=2).fit(_log(0))
    histories = [np.array([1, 5, 9]), np.array([300]), np.array([2, 2, 7, 11, 13])]
    first = model.history_vectors(histories)
    solver = model._fold_in_solver()
    np.testing.assert_allclose(first, _fresh_solve(model, histories), rtol=1e-5, atol=1e-6)
    model.history_vectors(histories[:1])
    assert model._fold_in_solver() is solver  # kept between requests
    model.fit(_log(1))  # new factors: the kept solver must not answer for them
    again = model.history_vectors(histories)
    assert model._fold_in_solver() is not solver
    np.testing.assert_allclose(again, _fresh_solve(model, histories), rtol=1e-5, atol=1e-6)
    assert not np.allclose(again, first)
