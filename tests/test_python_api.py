"""The Python API's edges (issue 15): pandas frames, clear errors for k and single ids, one rule for
id types, a one-call evaluation, and a training summary that survives save/load."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from vitrina.data.loaders import load_movielens, load_table
from vitrina.data.splits import leave_one_out
from vitrina.errors import ConfigError, DataValidationError
from vitrina.evaluation import evaluate_model
from vitrina.evaluation.benchmark import run_benchmark
from vitrina.evaluation.config import make_config
from vitrina.models.base import load_model
from vitrina.models.ease import EASE
from vitrina.models.popular import Popular
from vitrina.models.sequential import SequentialTransformer


@pytest.fixture(scope="module")
def events(ml100k_head: pl.DataFrame) -> pl.DataFrame:
    return ml100k_head.head(6000)


def test_pandas_frames_are_converted(events: pl.DataFrame) -> None:
    from_pandas = EASE(l2=50).fit(events.to_pandas())
    from_polars = EASE(l2=50).fit(events)
    assert from_pandas.recommend([1, 2], k=5).equals(from_polars.recommend([1, 2], k=5))
    split = leave_one_out(events.to_pandas())  # splits accept them too
    assert split.test.height == leave_one_out(events).test.height


def test_other_objects_are_refused_by_name(events: pl.DataFrame) -> None:
    with pytest.raises(
        DataValidationError, match=r"expected a polars or pandas DataFrame, got builtins\.dict"
    ):
        Popular().fit(events.to_dict(as_series=False))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.recommend([1], k="10"), "k: expected a positive integer, got '10' (str)"),
        (lambda m: m.recommend([1], k=0), "k: expected a positive integer, got 0"),
        (lambda m: m.recommend(1), "users: expected a list of ids, got int 1; wrap a single id in a list"),
        (lambda m: m.recommend("196"), "users: expected a list of ids, got str '196'"),
        (lambda m: m.recommend_for_history(50), "items: expected a list of ids, got int 50"),
        (lambda m: m.recommend_for_history([50], k=2.5), "k: expected a positive integer, got 2.5"),
    ],
)
def test_recommend_argument_errors_are_clear(events: pl.DataFrame, call, message: str) -> None:  # type: ignore[no-untyped-def]
    model = EASE(l2=50).fit(events)
    with pytest.raises(ConfigError) as info:
        call(model)
    assert message in str(info.value)


def test_id_rule_csv_integers_match_the_movielens_loader(data_home: Path, tmp_path: Path) -> None:
    """A CSV whose ids are all plain integers gives Int64 ids, the same as ml-100k's own loader."""
    native = load_movielens(data_home / "ml-100k" / "u.data").head(2000)
    path = tmp_path / "ml.csv"
    native.select("user_id", "item_id", "timestamp").write_csv(path)
    from_csv = load_table(path)
    assert from_csv["user_id"].dtype == from_csv["item_id"].dtype == pl.Int64
    assert from_csv["item_id"].to_list() == native["item_id"].to_list()
    recs = Popular().fit(from_csv).recommend([native["user_id"][0]], k=3)
    assert recs["item_id"].dtype == pl.Int64


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["007", "7", "8"], ["007", "7", "8"]),  # a leading zero: strings as written, "007" != "7"
        (["sku-1", "2", "3"], ["sku-1", "2", "3"]),  # any non-integer id: the whole column is strings
        (["99999999999999999999", "1", "2"], ["99999999999999999999", "1", "2"]),  # beyond 64 bits
        (["-3", "0", "12"], [-3, 0, 12]),
    ],
)
def test_id_rule_otherwise_strings_as_written(
    tmp_path: Path, items: list[str], expected: list[object]
) -> None:
    path = tmp_path / "e.csv"
    path.write_text("user_id,item_id,timestamp\n" + "".join(f"u,{i},{t}\n" for t, i in enumerate(items)))
    assert load_table(path)["item_id"].to_list() == expected


def test_evaluate_model_is_the_benchmark_in_one_call(events: pl.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    events.select("user_id", "item_id", "timestamp").write_csv(path)
    metrics = evaluate_model(EASE(l2=50), leave_one_out(load_table(path), validation_users=2048, seed=0))
    bench = run_benchmark(make_config({"dataset": str(path), "format": "csv"}), models={"ease": EASE(l2=50)})
    expected = bench["runs"][0]["metrics"]
    assert {m: metrics[m] for m in expected} == pytest.approx(expected)
    with pytest.raises(ConfigError, match="split: expected a vitrina Split"):
        evaluate_model(EASE(), events)  # type: ignore[arg-type]


@pytest.mark.usefixtures("one_thread")
def test_training_summary_and_lineage_survive_load(events: pl.DataFrame, tmp_path: Path) -> None:
    split = leave_one_out(events, validation_users=50)
    model = SequentialTransformer(n_factors=8, n_blocks=1, max_len=10, epochs=2, verbose=False)
    model.fit(split.train, validation=split.validation)
    model.save(tmp_path / "m", lineage={"data": {"sha256": "abc"}})
    loaded = load_model(tmp_path / "m")
    assert loaded.training_summary_["best_epoch"] == model.training_summary_["best_epoch"]  # type: ignore[attr-defined]
    assert loaded.training_summary_["history"][0]["loss"] == pytest.approx(
        model.training_summary_["history"][0]["loss"]
    )  # type: ignore[attr-defined]
    assert loaded.lineage_ == {"data": {"sha256": "abc"}}  # type: ignore[attr-defined]
