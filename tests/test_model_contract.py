"""The contract every registered baseline keeps, checked on MovieLens-100k with small parameters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from threadpoolctl import threadpool_limits

from vitrina.errors import ConfigError, NotFittedError, VitrinaError
from vitrina.models.base import Recommender, load_model
from vitrina.models.registry import make_model

ML100K = Path("/work/shared/datasets/ml-100k/u.data")

SMALL: dict[str, dict[str, object]] = {
    "popular": {},
    "itemknn": {"k_neighbors": 30, "shrinkage": 5.0},
    "ease": {"l2": 200.0},
    "als": {"factors": 16, "iterations": 5, "seed": 3},
    "bpr": {"factors": 16, "iterations": 20, "seed": 3},
    # time-aware sequential models (the other sequential ones: tests/test_sequential_model.py)
    **{
        name: {
            "n_factors": 16,
            "n_negatives": 16,
            "max_len": 20,
            "epochs": 1,
            "dropout": 0.0,
            "verbose": False,
        }
        for name in ("hstu", "fuxi-alpha")
    },
}
BAD: dict[str, tuple[dict[str, object], str]] = {
    "popular": ({"days": -1.0}, "days"),
    "itemknn": ({"k_neighbors": 0}, "k_neighbors"),
    "ease": ({"l2": -5.0}, "l2"),
    "als": ({"factors": 0}, "factors"),
    "bpr": ({"learning_rate": 0.0}, "learning_rate"),
    "hstu": ({"dropout": 1.5}, "dropout"),
    "fuxi-alpha": ({"layers": "ligr"}, "use_time"),
}
NAMES = list(SMALL)
EXACT_HISTORY = {"popular", "itemknn", "ease"}  # ALS: float32 round-off only; BPR: a fold-in approximation


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    # the 2 shared CPU cores make multi-threaded OpenBLAS spin (EASE's inverse ran 50x slower)
    with threadpool_limits(1, "blas"):
        yield


@pytest.fixture(scope="module")
def ratings() -> pl.DataFrame:
    return pl.read_csv(
        ML100K, separator="\t", has_header=False, new_columns=["user_id", "item_id", "rating", "timestamp"]
    ).drop("rating")


@pytest.fixture(scope="module")
def fitted(ratings: pl.DataFrame) -> dict[str, Recommender]:
    return {name: make_model(name, SMALL[name]).fit(ratings) for name in NAMES}


def _history(ratings: pl.DataFrame, user: int) -> list[int]:
    return (
        ratings.filter(pl.col("user_id") == user).sort("timestamp", maintain_order=True)["item_id"].to_list()
    )


def _times(ratings: pl.DataFrame, user: int) -> list[int]:
    return (
        ratings.filter(pl.col("user_id") == user)
        .sort("timestamp", maintain_order=True)["timestamp"]
        .to_list()
    )


USERS = [1, 13, 405, 655, 942]  # 405 and 655 have the longest histories


_THREAD_ORDER_SENSITIVE = {"hstu", "hstu-large", "fuxi-alpha"}


@pytest.mark.parametrize("name", NAMES)
def test_refit_is_deterministic(name: str, ratings: pl.DataFrame, fitted: dict[str, Recommender]) -> None:
    again = make_model(name, SMALL[name]).fit(ratings)
    users = np.arange(len(again.users_))
    first, second = fitted[name]._score_users(users), again._score_users(users)
    if name in _THREAD_ORDER_SENSITIVE:
        # their time/position-bias gradients are summed by multi-threaded CPU kernels whose order
        # varies run to run (bit-identical with one thread): equal to float rounding, same lists
        np.testing.assert_allclose(first, second, rtol=1e-4, atol=1e-5)
        assert fitted[name].recommend(USERS, 10)["item_id"].equals(again.recommend(USERS, 10)["item_id"])
    else:
        assert np.array_equal(first, second)


@pytest.mark.parametrize("name", NAMES)
def test_params_round_trip(name: str, fitted: dict[str, Recommender]) -> None:
    params = fitted[name].get_params()
    assert make_model(name, params).get_params() == params


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_single(name: str, fitted: dict[str, Recommender]) -> None:
    model = fitted[name]
    batch = model.recommend(USERS, 10)
    single = pl.concat([model.recommend([u], 10) for u in USERS])
    assert batch.select("user_id", "item_id", "rank").equals(single.select("user_id", "item_id", "rank"))
    # a one-row matrix product may round differently from a many-row one (ALS, BPR)
    np.testing.assert_allclose(batch["score"].to_numpy(), single["score"].to_numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_seen_items_excluded_unless_asked(
    name: str, ratings: pl.DataFrame, fitted: dict[str, Recommender]
) -> None:
    model = fitted[name]
    for user in (405, 655):
        seen = set(_history(ratings, user))
        assert not seen & set(model.recommend([user], 20)["item_id"])
        assert seen & set(model.recommend([user], 20, exclude_seen=False)["item_id"])


@pytest.mark.parametrize("name", NAMES)
def test_allow_and_deny_apply_before_top_k(
    name: str, ratings: pl.DataFrame, fitted: dict[str, Recommender]
) -> None:
    model = fitted[name]
    user = 13
    seen = set(_history(ratings, user))
    unseen = sorted(set(ratings["item_id"].to_list()) - seen)
    allow = np.random.default_rng(0).choice(unseen, 40, replace=False).tolist()
    allowed = model.recommend([user], 10, allow_items=allow)
    assert allowed.height == 10 and set(allowed["item_id"]) <= set(allow)

    top20 = model.recommend([user], 20)["item_id"].to_list()
    denied = model.recommend([user], 10, deny_items=top20[:10])
    assert denied["item_id"].to_list() == top20[10:]
    assert denied["rank"].to_list() == list(range(1, 11))


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(
    name: str, tmp_path: Path, ratings: pl.DataFrame, fitted: dict[str, Recommender]
) -> None:
    model = fitted[name]
    loaded = load_model(model.save(tmp_path / name))
    assert type(loaded) is type(model) and loaded.get_params() == model.get_params()
    assert loaded.recommend(USERS, 10).equals(model.recommend(USERS, 10))
    history = _history(ratings, 13)
    assert loaded.recommend_for_history(history, 10).equals(model.recommend_for_history(history, 10))


@pytest.mark.parametrize("name", NAMES)
def test_history_matches_known_user(name: str, ratings: pl.DataFrame, fitted: dict[str, Recommender]) -> None:
    """A known user's full history scores like the user: exactly for item-item and popularity models,
    to float32 round-off for ALS (same least-squares solve), loosely for BPR (mean-of-factors fold-in)."""
    model = fitted[name]
    overlaps = []
    for user in USERS:
        by_user = model.recommend([user], 10)
        times = _times(ratings, user) if model.uses_time else None
        by_history = model.recommend_for_history(_history(ratings, user), 10, timestamps=times)
        if model.supports_history and model.uses_validation:  # the same network on the same input
            assert by_history.equals(by_user.drop("user_id"))
        if name in EXACT_HISTORY:
            assert by_history.equals(by_user.drop("user_id"))
        elif name == "als":
            assert by_history["item_id"].to_list() == by_user["item_id"].to_list()
            np.testing.assert_allclose(by_history["score"], by_user["score"], rtol=1e-4, atol=1e-5)
        overlaps.append(len(set(by_history["item_id"]) & set(by_user["item_id"])) / 10)
    assert np.mean(overlaps) >= 0.3  # BPR measured 0.66 on these users


@pytest.mark.parametrize("name", NAMES)
def test_unknown_user_raises(name: str, fitted: dict[str, Recommender]) -> None:
    with pytest.raises(VitrinaError, match="999999"):
        fitted[name].recommend([1, 999999], 10)


@pytest.mark.parametrize("name", NAMES)
def test_not_fitted_raises(name: str, tmp_path: Path) -> None:
    model = make_model(name, SMALL[name])
    with pytest.raises(NotFittedError):
        model.recommend([1], 10)
    with pytest.raises(NotFittedError):
        model.recommend_for_history([1, 2], 10)
    with pytest.raises(NotFittedError):
        model.save(tmp_path / name)


@pytest.mark.parametrize("name", NAMES)
def test_bad_hyper_parameter_raises(name: str, ratings: pl.DataFrame) -> None:
    params, param = BAD[name]
    value = next(iter(params.values()))
    with pytest.raises(ConfigError, match=rf"{param}.*{value}"):
        make_model(name, params).fit(ratings.head(200))
