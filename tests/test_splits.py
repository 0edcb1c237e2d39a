"""Splits never leak a test event into train, and break timestamp ties by row order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vitrina.data.datasets import load_dataset
from vitrina.data.filtering import k_core, to_implicit
from vitrina.data.idmap import IdMap
from vitrina.data.splits import leave_one_out, temporal_split
from vitrina.errors import ConfigError, DataValidationError


def _with_row(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_row_index("row")


def _assert_disjoint(parts: list[pl.DataFrame]) -> None:
    rows = [set(p["row"].to_list()) for p in parts]
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            assert not rows[i] & rows[j], "an event is in two parts"


def test_leave_one_out_tie_break_by_row_order() -> None:
    df = pl.DataFrame({"user_id": [1, 1, 1, 1], "item_id": [10, 11, 12, 13], "timestamp": [5, 7, 7, 7]})
    s = leave_one_out(df)
    assert s.train["item_id"].to_list() == [10, 11]
    assert s.validation["item_id"].to_list() == [12]
    assert s.test["item_id"].to_list() == [13]


def test_leave_one_out_short_users_stay_in_train() -> None:
    df = pl.DataFrame({"user_id": [1, 1, 2], "item_id": [1, 2, 3], "timestamp": [1, 2, 3]})
    s = leave_one_out(df)
    assert s.train.height == 3 and s.test.height == 0
    s = leave_one_out(df, validation=False)
    assert s.test["item_id"].to_list() == [2] and s.validation.height == 0


@settings(max_examples=80, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 9), st.integers(0, 4)), min_size=1, max_size=60
    ),
    validation=st.booleans(),
    validation_users=st.one_of(st.none(), st.integers(1, 8)),
)
def test_leave_one_out_never_leaks(
    events: list[tuple[int, int, int]], validation: bool, validation_users: int | None
) -> None:
    df = _with_row(pl.DataFrame(events, schema=["user_id", "item_id", "timestamp"], orient="row"))
    if not validation:
        validation_users = None
    s = leave_one_out(df, validation=validation, validation_users=validation_users)
    parts = [s.train, s.validation, s.test]
    _assert_disjoint(parts)
    assert sum(p.height for p in parts) == df.height
    # each held-out event is later (time, then row order) than every train event of its user
    for held in (s.validation, s.test):
        for u, t, r in held.select("user_id", "timestamp", "row").rows():
            tr = s.train.filter(pl.col("user_id") == u)
            assert ((tr["timestamp"] < t) | ((tr["timestamp"] == t) & (tr["row"] < r))).all()


def test_leave_one_out_validates_a_sample_of_users(data_home: Path) -> None:
    """With ``validation_users`` only that many users hold out their second-to-last event; everyone
    else trains on it. Test events are unchanged, and the sample is fixed by the seed."""
    df = _with_row(load_dataset("beauty"))
    full = leave_one_out(df)
    s = leave_one_out(df, validation_users=2048, seed=0)
    assert s.validation.height == s.validation["user_id"].n_unique() == 2048
    assert s.test.equals(full.test)
    assert s.train.height == full.train.height + full.validation.height - 2048
    assert s.train.join(s.validation, on="row").height == 0
    assert s.train.join(s.test, on="row").height == 0
    # every other user's second-to-last event is trained on
    others = full.validation.join(s.validation, on="user_id", how="anti")
    assert set(others["row"].to_list()) <= set(s.train["row"].to_list())
    assert leave_one_out(df, validation_users=2048, seed=0).validation.equals(s.validation)
    assert not leave_one_out(df, validation_users=2048, seed=1).validation.equals(s.validation)
    assert leave_one_out(df, validation_users=10**6).validation.equals(full.validation)


@pytest.mark.parametrize("kwargs", [{"validation_users": 0}, {"validation": False, "validation_users": 5}])
def test_leave_one_out_bad_validation_users(kwargs: dict) -> None:
    df = pl.DataFrame({"user_id": [1, 1, 1], "item_id": [1, 2, 3], "timestamp": [1, 2, 3]})
    with pytest.raises(ConfigError, match="validation_users"):
        leave_one_out(df, **kwargs)


def test_leave_one_out_on_beauty_no_test_event_in_train(data_home: Path) -> None:
    df = _with_row(load_dataset("beauty"))
    s = leave_one_out(df)
    assert s.test.height == s.validation.height == 22_363
    assert s.train.join(s.test, on="row").height == 0
    assert s.train.join(s.validation, on="row").height == 0
    last = df.group_by("user_id").agg(pl.col("row").max())
    assert set(last["row"].to_list()) == set(s.test["row"].to_list())


@settings(max_examples=80, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 7), st.integers(0, 20)), min_size=2, max_size=60
    ),
    cutoff=st.integers(1, 20),
    cold=st.booleans(),
    seen=st.booleans(),
)
def test_temporal_never_leaks(
    events: list[tuple[int, int, int]], cutoff: int, cold: bool, seen: bool
) -> None:
    df = _with_row(pl.DataFrame(events, schema=["user_id", "item_id", "timestamp"], orient="row"))
    if not ((df["timestamp"] < cutoff).any() and (df["timestamp"] >= cutoff).any()):
        with pytest.raises(ConfigError, match="empty part"):
            temporal_split(df, cutoff=cutoff)
        return
    s = temporal_split(df, cutoff=cutoff, filter_cold_items=cold, filter_seen=seen)
    _assert_disjoint([s.train, s.test])
    assert (s.train["timestamp"] < cutoff).all() and (s.test["timestamp"] >= cutoff).all()
    assert set(s.test["user_id"]) <= set(s.train["user_id"])
    if cold:
        assert set(s.test["item_id"]) <= set(s.train["item_id"])
    if seen:
        pairs = set(s.train.select("user_id", "item_id").rows())
        assert not any(p in pairs for p in s.test.select("user_id", "item_id").rows())


def test_temporal_on_ml1m_with_dates_and_validation(data_home: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = _with_row(load_dataset("ml-1m"))
    s = temporal_split(df, last_days=90, validation_days=30)
    t_max = df["timestamp"].max()
    assert (s.test["timestamp"] >= t_max - 90 * 86_400).all()
    assert (s.validation["timestamp"] < t_max - 90 * 86_400).all()
    assert s.train["timestamp"].max() < s.validation["timestamp"].min()
    _assert_disjoint([s.train, s.validation, s.test])
    by_date = temporal_split(df, cutoff="2001-01-01")
    assert by_date.train["timestamp"].max() < 978_307_200 <= by_date.test["timestamp"].min()


def test_temporal_config_errors() -> None:
    df = pl.DataFrame({"user_id": [1, 1], "item_id": [1, 2], "timestamp": [1, 2]})
    with pytest.raises(ConfigError, match="exactly one"):
        temporal_split(df)
    with pytest.raises(ConfigError, match="ISO"):
        temporal_split(df, cutoff="next tuesday")


def test_k_core_is_iterative() -> None:
    # user 3 has 2 events; dropping it leaves item 9 with 1 event, which must then go too
    df = pl.DataFrame({"user_id": [1, 1, 2, 2, 3, 3], "item_id": [5, 9, 5, 9, 9, 7], "timestamp": range(6)})
    out = k_core(df, min_user=2, min_item=2)
    assert out.height == 4
    out = k_core(df, min_user=2, min_item=3)
    assert out.height == 0


def test_to_implicit_keeps_rating() -> None:
    df = pl.DataFrame({"user_id": [1, 1], "item_id": [1, 2], "timestamp": [1, 2], "weight": [5.0, 2.0]})
    out = to_implicit(df, threshold=4)
    assert out["weight"].to_list() == [1.0] and out["rating"].to_list() == [5.0]


def test_idmap_roundtrip(tmp_path: Path) -> None:
    ids = IdMap.from_values(pl.Series(["b", "a", "b", "c"]))
    assert ids.external_ids.to_list() == ["b", "a", "c"]
    idx = ids.to_internal(["c", "b"])
    assert idx.tolist() == [2, 0] and ids.to_external(idx).to_list() == ["c", "b"]
    assert ids.to_internal(["zz"], strict=False).tolist() == [-1]
    with pytest.raises(DataValidationError, match="not in the mapping"):
        ids.to_internal(["zz"])
    ids.save(tmp_path / "m.parquet")
    assert IdMap.load(tmp_path / "m.parquet") == ids
    assert np.array_equal(IdMap.load(tmp_path / "m.parquet").to_internal(["a"]), [1])
