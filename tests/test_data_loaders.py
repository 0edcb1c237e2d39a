"""Loaders read every shipped format exactly, and malformed input gives a clear error, never a crash
or silent loss."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vitrina.data.datasets import PartialDatasetWarning, load_dataset
from vitrina.data.interactions import validate_interactions
from vitrina.data.loaders import load_movielens, load_pairs, load_s3rec, load_table
from vitrina.errors import DataValidationError


@pytest.mark.parametrize(
    ("name", "events", "users", "items"),
    [
        ("ml-100k", 100_000, 943, 1_682),
        ("beauty", 198_502, 22_363, 12_101),
        ("yelp", 316_354, 30_431, 20_033),
        ("lastfm", 52_551, 1_090, 3_646),
        ("video-games", 287_107, 31_013, 23_715),
    ],
)
def test_named_datasets_have_published_counts(
    data_home: Path, name: str, events: int, users: int, items: int
) -> None:
    df = load_dataset(name)
    assert (df.height, df["user_id"].n_unique(), df["item_id"].n_unique()) == (events, users, items)
    assert df.columns[:4] == ["user_id", "item_id", "timestamp", "weight"]


def test_ml1m_partial_copy_warns_and_keeps_ratings(data_home: Path) -> None:
    with pytest.warns(PartialDatasetWarning, match="incomplete"):
        df = load_dataset("ml-1m")
    assert df.height == 487_650 and df["user_id"].n_unique() == 2_999
    assert sorted(df["weight"].unique().to_list()) == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_s3rec_position_is_order(tmp_path: Path) -> None:
    f = tmp_path / "seq.txt"
    f.write_text("7 3 1 3\n8 2\n")
    df = load_s3rec(f)
    assert df.select("user_id", "item_id", "timestamp").rows() == [(7, 3, 0), (7, 1, 1), (7, 3, 2), (8, 2, 0)]


def test_movielens_1m_format_and_gzip(tmp_path: Path) -> None:
    f = tmp_path / "ratings.dat.gz"
    f.write_bytes(gzip.compress(b"1::1193::5::978300760\n1::661::3::978302109\n"))
    df = load_movielens(f)
    assert df.rows() == [(1, 1193, 978300760, 5.0), (1, 661, 978302109, 3.0)]


def test_pairs_timestamp_counts_within_user(tmp_path: Path) -> None:
    f = tmp_path / "v.txt"
    f.write_text("1 5\n1 6\n2 5\n1 7\n")
    assert load_pairs(f)["timestamp"].to_list() == [0, 1, 0, 2]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("1\t2\t5\n1\tx\t3\t88\n", "line 1: expected 4 fields"),
        ("1\t2\t5\t10\n1\tx\t3\t88\n", "line 2, field 'item_id': expected an integer, got 'x'"),
        ("1\t2\t5\t10\n\n1\t3\tfive\t88\n", "line 3, field 'weight': expected a number"),
        ("1\t2\t-1\t10\n", "line 1, field 'weight': expected a finite non-negative number"),
    ],
)
def test_movielens_errors_name_line_and_field(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "u.data"
    f.write_text(content)
    with pytest.raises(DataValidationError, match=message) as info:
        load_movielens(f)
    assert str(f) in str(info.value)


def test_s3rec_errors(tmp_path: Path) -> None:
    f = tmp_path / "s.txt"
    f.write_text("1 2 3\n2\n")
    with pytest.raises(DataValidationError, match=r"line 2: expected 'user item"):
        load_s3rec(f)
    f.write_text("1 2 3\n1 4\n")
    with pytest.raises(DataValidationError, match="user 1 appears on more than one line"):
        load_s3rec(f)
    f.write_text("1 2 3\n2 4 b\n")
    with pytest.raises(DataValidationError, match="line 2, field 'item_id'"):
        load_s3rec(f)


def test_csv_with_column_mapping_and_iso_times(tmp_path: Path) -> None:
    f = tmp_path / "events.csv"
    f.write_text("visitor,product,when,extra\nu1,p1,2024-01-02T03:04:05,a\nu2,p1,2024-01-03,b\n")
    df = load_table(f, columns={"user_id": "visitor", "item_id": "product", "timestamp": "when"})
    assert df["timestamp"].to_list() == [1704164645, 1704240000]
    assert df["extra"].to_list() == ["a", "b"] and df["weight"].to_list() == [1.0, 1.0]


def test_csv_bad_timestamp_and_missing_column(tmp_path: Path) -> None:
    f = tmp_path / "e.csv"
    f.write_text("user_id,item_id,timestamp\n1,2,2024-01-01\n1,3,yesterday\n")
    with pytest.raises(DataValidationError, match=r"line 3, field 'timestamp': cannot parse 'yesterday'"):
        load_table(f)
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['timestamp'\]"):
        validate_interactions(pl.DataFrame({"user_id": [1], "item_id": [2]}))


def test_parquet_roundtrip_and_nulls(tmp_path: Path) -> None:
    f = tmp_path / "e.parquet"
    pl.DataFrame({"u": [1, 2], "i": ["a", None], "t": [1, 2]}).write_parquet(f)
    with pytest.raises(DataValidationError, match="row 2, field 'item_id': expected a value, got null"):
        load_table(f, columns={"user_id": "u", "item_id": "i", "timestamp": "t"})


@pytest.mark.parametrize("policy", ["keep", "sum", "first", "raise"])
def test_duplicate_policy(policy: str) -> None:
    df = pl.DataFrame(
        {"user_id": [1, 1, 1], "item_id": [2, 2, 3], "timestamp": [5, 5, 5], "weight": [1.0, 2.0, 1.0]}
    )
    if policy == "raise":
        with pytest.raises(DataValidationError, match="duplicate event"):
            validate_interactions(df, duplicates=policy)
        return
    out = validate_interactions(df, duplicates=policy)  # type: ignore[arg-type]
    expected = {"keep": [1.0, 2.0, 1.0], "sum": [3.0, 1.0], "first": [1.0, 1.0]}[policy]
    assert out["weight"].to_list() == expected


# ------------------------------------------------------------------ fuzzing: junk never crashes or vanishes
_junk_line = st.text(alphabet=st.sampled_from(list("0123456789 \t:x-.\n")), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_junk_line, max_size=8), fmt=st.sampled_from(["movielens", "s3rec", "pairs", "csv"]))
def test_fuzz_loaders_error_clearly_or_keep_every_event(tmp_path: Path, lines: list[str], fmt: str) -> None:
    f = tmp_path / f"junk.{fmt}"
    text = "\n".join(lines)
    f.write_text(("user_id,item_id,timestamp\n" if fmt == "csv" else "") + text)
    reader = {"movielens": load_movielens, "s3rec": load_s3rec, "pairs": load_pairs, "csv": load_table}[fmt]
    try:
        df = reader(f)
    except DataValidationError as exc:
        assert str(f) in str(exc) or "columns" in str(exc)
        return
    data_lines = [ln for ln in text.splitlines() if ln.strip()]
    if fmt == "s3rec":  # each token after the user is one event
        assert df.height == sum(len(ln.split()) - 1 for ln in data_lines)
    else:
        assert df.height == len(data_lines)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=200))
def test_fuzz_binary_garbage(tmp_path: Path, blob: bytes) -> None:
    f = tmp_path / "g.txt.gz"
    f.write_bytes(blob)
    with pytest.raises(DataValidationError):
        load_s3rec(f)


@pytest.mark.parametrize(
    ("name", "plain", "events", "users"),
    [("beauty-ts", "beauty", 198_502, 22_363), ("yelp-ts", "yelp", 316_317, 30_424)],
)
def test_timestamped_datasets_keep_the_s3rec_sequences(
    data_home: Path, name: str, plain: str, events: int, users: int
) -> None:
    """Absolute times, and every user's sequence exactly the S3-Rec order: same-day ties (Beauty has
    day resolution) keep the file's order through the stable sort of ``Dataset``."""
    from vitrina.data.dataset import Dataset

    timed = load_dataset(name)
    assert (timed.height, timed["user_id"].n_unique()) == (events, users)
    assert timed["user_id"].dtype == pl.Int64 and timed["timestamp"].min() > 1_000_000_000
    seqs = {
        tuple(ds.users.to_external(np.array([u])).to_list()): ds.items.to_external(ds.sequence(u)).to_list()
        for ds in [Dataset.from_interactions(timed)]
        for u in range(ds.n_users)
    }
    order = load_dataset(plain).group_by("user_id", maintain_order=True).agg("item_id")
    expected = {(u,): items for u, items in order.iter_rows()}
    assert seqs == {u: expected[u] for u in seqs}
    assert timed.group_by("user_id").agg(pl.col("timestamp").diff().min() >= 0)["timestamp"].all()
    if name == "beauty-ts":  # day resolution: ties are common, so the order really is the file's
        assert (timed["timestamp"] % 86_400 == 0).all()
        assert timed.select(pl.struct("user_id", "timestamp").is_duplicated().sum()).item() > 10_000


def test_timestamped_loader_names_a_bad_id(tmp_path: Path) -> None:
    from vitrina.data.loaders import load_s3rec_timestamped

    f = tmp_path / "x.tsv"
    f.write_text("user_id\titem_id\ttimestamp\n1\t2\t100\n1\tb7\t200\n")
    with pytest.raises(DataValidationError, match=r"x.tsv, line 3, field 'item_id'.*'b7'"):
        load_s3rec_timestamped(f)
