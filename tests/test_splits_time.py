"""Per-user ratio split and rolling time windows (issue 15): leak-free, tested like the others."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vitrina.data.datasets import load_dataset
from vitrina.data.splits import rolling_windows, user_ratio_split
from vitrina.errors import ConfigError

DAY = 86_400
events_strategy = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 7), st.integers(0, 30)), min_size=1, max_size=80
)


def _frame(events: list[tuple[int, int, int]]) -> pl.DataFrame:
    return pl.DataFrame(events, schema=["user_id", "item_id", "timestamp"], orient="row").with_row_index(
        "row"
    )


@settings(max_examples=80, deadline=None)
@given(events=events_strategy, test_ratio=st.sampled_from([0.1, 0.2, 0.5]), val=st.sampled_from([0.0, 0.2]))
def test_user_ratio_split_never_leaks(
    events: list[tuple[int, int, int]], test_ratio: float, val: float
) -> None:
    df = _frame(events)
    s = user_ratio_split(df, test_ratio=test_ratio, validation_ratio=val, filter_seen=False)
    rows = [set(p["row"]) for p in (s.train, s.validation, s.test)]
    assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])
    assert rows[0] | rows[1] | rows[2] == set(df["row"])  # nothing lost without filter_seen
    order = df.sort(["user_id", "timestamp", "row"]).with_row_index("pos")  # ties: row order
    pos = dict(zip(order["row"], order["pos"], strict=True))
    for user, group in df.group_by("user_id"):
        n = group.height
        n_test = max(1, math.floor(n * test_ratio))
        n_val = max(1, math.floor(n * val)) if val else 0
        train = s.train.filter(pl.col("user_id") == user[0])
        held = [
            s.validation.filter(pl.col("user_id") == user[0]),
            s.test.filter(pl.col("user_id") == user[0]),
        ]
        if n < n_test + 1:
            assert train.height == n  # too short: wholly in train
            continue
        if n < n_test + n_val + 1:  # too short for validation: tested all the same
            n_val = 0
        assert (held[1].height, held[0].height) == (n_test, n_val)
        last_train = max(pos[r] for r in train["row"])
        assert all(pos[r] > last_train for part in held for r in part["row"])  # held out = newest
        if n_val:
            assert max(pos[r] for r in held[0]["row"]) < min(pos[r] for r in held[1]["row"])


@settings(max_examples=40, deadline=None)
@given(events=events_strategy, val=st.sampled_from([0.1, 0.2, 0.4]), seen=st.booleans())
def test_user_ratio_split_tests_the_same_events_with_or_without_validation(
    events: list[tuple[int, int, int]], val: float, seen: bool
) -> None:
    """Models compared under different validation shares are scored on the same test events;
    a test pair seen in validation is dropped like one seen in train (it cannot be recommended)."""
    df = _frame(events)
    without = user_ratio_split(df, test_ratio=0.2, filter_seen=seen)
    with_val = user_ratio_split(df, test_ratio=0.2, validation_ratio=val, filter_seen=seen)
    assert with_val.test["row"].to_list() == without.test["row"].to_list()


def test_user_ratio_split_filters_seen_pairs() -> None:
    df = _frame([(1, 10, 0), (1, 11, 1), (1, 10, 2), (1, 12, 3), (1, 13, 4)])
    kept = user_ratio_split(df, test_ratio=0.6, filter_seen=False)  # test = t 2, 3, 4
    assert kept.test["item_id"].to_list() == [10, 12, 13]
    s = user_ratio_split(df, test_ratio=0.6)  # item 10 is already in train: it cannot be recommended
    assert s.test["item_id"].to_list() == [12, 13] and s.train["item_id"].to_list() == [10, 11]


@pytest.mark.parametrize(
    "kwargs", [{"test_ratio": 0.0}, {"test_ratio": 1.0}, {"test_ratio": 0.6, "validation_ratio": 0.4}]
)
def test_user_ratio_split_bad_ratios(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="user_ratio_split"):
        user_ratio_split(_frame([(1, 1, 1), (1, 2, 2)]), **kwargs)


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 6), st.integers(0, 40 * DAY)), min_size=5, max_size=80
    ),
    n_windows=st.integers(1, 3),
    test_days=st.sampled_from([3.0, 7.0]),
    train_days=st.sampled_from([None, 10.0]),
)
def test_rolling_windows_never_leak(
    events: list[tuple[int, int, int]], n_windows: int, test_days: float, train_days: float | None
) -> None:
    df = _frame(events)
    try:
        splits = rolling_windows(df, n_windows=n_windows, test_days=test_days, train_days=train_days)
    except ConfigError as exc:
        assert "window" in str(exc)
        assert "leaves an empty part" in str(exc) or "nothing to train on" in str(exc)
        return
    end = df["timestamp"].max() + 1
    starts = [end - test_days * DAY - (n_windows - 1 - j) * test_days * DAY for j in range(n_windows)]
    for start, s in zip(starts, splits, strict=True):
        assert (s.train["timestamp"] < start).all()
        assert ((s.test["timestamp"] >= start) & (s.test["timestamp"] < start + test_days * DAY)).all()
        if train_days is not None:
            assert (s.train["timestamp"] >= start - train_days * DAY).all()
        assert set(s.test["user_id"]) <= set(s.train["user_id"])
        pairs = set(s.train.select("user_id", "item_id").rows())
        assert not any(p in pairs for p in s.test.select("user_id", "item_id").rows())


def test_rolling_windows_refuse_a_window_before_the_first_event() -> None:
    df = _frame([(1, 1, 0), (1, 2, 5 * DAY), (2, 1, 9 * DAY)])
    with pytest.raises(ConfigError, match=r"window 1 of 3 would test from .* events begin at"):
        rolling_windows(df, n_windows=3, test_days=4)


def test_rolling_windows_on_ml100k(data_home: Path) -> None:
    """Four back-to-back weeks: each fold trains on everything before its week, tests on it."""
    df = load_dataset("ml-100k")
    folds = rolling_windows(df, n_windows=4, test_days=7, validation_days=7)
    assert len(folds) == 4
    ends = [f.test["timestamp"].max() for f in folds]
    newest = df["timestamp"].max()
    assert ends == sorted(ends) and newest - 7 * DAY < ends[-1] <= newest  # the last week is tested
    for before, after in itertools.pairwise(folds):
        assert before.test["timestamp"].max() < after.test["timestamp"].min()
        assert after.train.height + after.validation.height > before.train.height + before.validation.height
    for f in folds:
        assert f.validation["timestamp"].max() < f.test["timestamp"].min()
        assert f.train["timestamp"].max() < f.validation["timestamp"].min()
