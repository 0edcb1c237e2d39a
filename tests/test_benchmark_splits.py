"""`vitrina benchmark --split ratio|rolling` (issue 15): per-user ratio and rolling time windows from
the command line, validation for early stopping always before the test part."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from vitrina.cli import app
from vitrina.data.columns import TIMESTAMP, USER
from vitrina.evaluation.benchmark import run_benchmark
from vitrina.evaluation.config import make_config
from vitrina.models.popular import Popular

runner = CliRunner()
DAY = 86_400


@pytest.fixture(scope="module")
def events_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """90 days of events: 120 users, 60 items with skewed popularity, ~25 events per user."""
    rng = np.random.default_rng(7)
    n = 3000
    users = rng.integers(0, 120, n)
    items = np.minimum(rng.zipf(1.5, n), 60)
    times = 1_700_000_000 + rng.integers(0, 90 * DAY, n)
    path = tmp_path_factory.mktemp("splits") / "events.csv"
    pl.DataFrame({"user_id": users, "item_id": items, "timestamp": times}).write_csv(path)
    return path


def _bench(args: list[str]) -> str:
    result = runner.invoke(app, ["benchmark", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_ratio_split_from_the_cli(events_csv: Path, tmp_path: Path) -> None:
    """The test part is each user's newest 20%, whatever the validation share."""
    runs = {}
    for val in ("0.1", "0.3"):
        out = tmp_path / val
        args = ["--dataset", str(events_csv), "--models", "popular", "--split", "ratio"]
        _bench([*args, "--test-ratio", "0.2", "--validation-ratio", val, "--output", str(out)])
        runs[val] = json.loads((out / "results.json").read_text())
    a, b = runs["0.1"], runs["0.3"]
    assert a["split"] == "ratio"
    assert a["data"]["test_events"] == b["data"]["test_events"] > 0
    assert a["data"]["validation_events"] < b["data"]["validation_events"]
    assert a["runs"][0]["metrics"] == pytest.approx(b["runs"][0]["metrics"])  # trained on train + validation


def test_rolling_windows_from_the_cli(events_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "rolling"
    args = ["--dataset", str(events_csv), "--models", "popular,itemknn", "--split", "rolling"]
    _bench([*args, "--windows", "3", "--last-days", "10", "--output", str(out)])
    results = json.loads((out / "results.json").read_text())
    assert [w["window"] for w in results["windows"]] == [1, 2, 3]
    assert [w["test_from"] < w["test_to"] for w in results["windows"]] == [True] * 3
    assert all(w["validation_events"] > 0 for w in results["windows"])
    for run in results["runs"]:
        per_window = [w["metrics"]["ndcg@10"] for w in run["windows"]]
        assert len(per_window) == 3
        assert run["metrics"]["ndcg@10"] == pytest.approx(statistics.fmean(per_window))
        assert run["metrics_sd"]["ndcg@10"] == pytest.approx(statistics.stdev(per_window))
    md = (out / "results.md").read_text()
    assert "rolling (3 windows, mean ± sd)" in md and "Per window:" in md
    assert f"{results['runs'][0]['metrics']['ndcg@10']:.4f} ± " in md


def test_every_window_validates_before_it_tests(events_csv: Path) -> None:
    """An early-stopping model sees, in each window, train < validation < test in time, and
    nothing from the test period or after it."""
    seen: list[tuple[pl.DataFrame, pl.DataFrame]] = []

    class Recording(Popular):
        uses_validation = True

        def fit(self, data, *, validation=None):  # type: ignore[no-untyped-def, override]
            seen.append((data, validation))
            return super().fit(data)

    config = make_config({"dataset": str(events_csv), "split": "rolling", "windows": 3, "last_days": 10})
    results = run_benchmark(config, models={"recording": Recording()})
    assert len(seen) == 3
    for (train, validation), window in zip(seen, results["windows"], strict=True):
        assert validation.height == window["validation_events"] > 0
        assert train[TIMESTAMP].max() < validation[TIMESTAMP].min()
        test_from = pl.Series([window["test_from"]]).str.to_datetime().dt.epoch("s")[0]
        assert validation[TIMESTAMP].max() < test_from


def test_ratio_validation_is_each_users_events_before_the_test_ones(events_csv: Path) -> None:
    seen: dict[str, pl.DataFrame] = {}

    class Recording(Popular):
        uses_validation = True

        def fit(self, data, *, validation=None):  # type: ignore[no-untyped-def, override]
            seen["train"], seen["validation"] = data, validation
            return super().fit(data)

    config = make_config({"dataset": str(events_csv), "split": "ratio", "test_ratio": 0.2})
    run_benchmark(config, models={"recording": Recording()})
    train, validation = seen["train"], seen["validation"]
    assert validation.height > 0
    last_train = train.group_by(USER).agg(pl.col(TIMESTAMP).max().alias("t_train"))
    first_val = validation.group_by(USER).agg(pl.col(TIMESTAMP).min().alias("t_val"))
    both = last_train.join(first_val, on=USER)
    assert (both["t_train"] <= both["t_val"]).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--split", "ratio", "--last-days", "3"], "last_days: not used by split 'ratio'"),
        (["--split", "loo", "--windows", "3"], "windows: not used by split 'loo'"),
        (["--split", "rolling"], "rolling split: give last_days"),
        (["--split", "ratio", "--test-ratio", "0.6", "--validation-ratio", "0.5"], "must be < 1"),
        (["--split", "ratio", "--test-ratio", "1.5"], "test_ratio"),
        (["--split", "rolling", "--windows", "20", "--last-days", "10"], "nothing to train on"),
    ],
)
def test_bad_split_options_are_clear_errors(events_csv: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["benchmark", "--dataset", str(events_csv), "--models", "popular", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_help_shows_the_split_defaults() -> None:
    result = runner.invoke(app, ["benchmark", "--help"], env={"COLUMNS": "200"})
    text = " ".join(result.output.split())
    for flag, default in (("--test-ratio", "0.2"), ("--windows", "3"), ("--validation-ratio", "test-ratio")):
        assert flag in text
        assert f"[default: ({default})]" in text


def test_tune_searches_on_the_ratio_split_and_refuses_rolling(events_csv: Path, tmp_path: Path) -> None:
    pytest.importorskip("optuna", reason="vitrina tune needs Optuna (vitrina[tune])")
    args = ["tune", "--dataset", str(events_csv), "--model", "popular", "--trials", "1"]
    ok = runner.invoke(app, [*args, "--split", "ratio", "--output", str(tmp_path / "t")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "t" / "best.toml").is_file()
    rolling = runner.invoke(app, [*args, "--split", "rolling", "--last-days", "10"])
    assert rolling.exit_code == 2 and "several splits" in " ".join(rolling.output.split())


def test_mlflow_logs_the_rolling_mean_and_sd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow", reason="MLflow is in the test extras; install vitrina[test]")
    from vitrina.evaluation.tracking import log_benchmark

    monkeypatch.chdir(tmp_path)
    run = {"model": "popular", "params": {}, "fit_seconds": 0.1, "recommend_seconds": 0.1}
    run |= {"metrics": {"ndcg@10": 0.1}, "metrics_sd": {"ndcg@10": 0.02}}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_benchmark({"dataset": "d", "split": "rolling", "k": 10, "runs": [run]}, uri)
    mlflow.set_tracking_uri(uri)
    (logged,) = mlflow.search_runs(experiment_names=["vitrina-benchmark"], output_format="list")
    assert logged.data.metrics["ndcg_at_10"] == 0.1 and logged.data.metrics["ndcg_at_10_sd"] == 0.02
