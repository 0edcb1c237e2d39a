"""`vitrina tune` (issue 15): a search space per model, validation only (never the test part),
pruning of epoch-trained trials by their validation score, study files, MLflow logging."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import polars as pl
import pytest
from typer.testing import CliRunner

from vitrina.cli import app
from vitrina.data.splits import Split, leave_one_out
from vitrina.errors import ConfigError
from vitrina.evaluation.config import load_config
from vitrina.evaluation.tuning import SPACES, tune_on_split
from vitrina.models.registry import MODELS, make_model

runner = CliRunner()


@pytest.fixture(scope="module")
def split(ml100k_head: pl.DataFrame) -> Split:
    return leave_one_out(ml100k_head.head(6000), validation_users=100)


def test_every_model_has_a_valid_search_space() -> None:
    assert set(SPACES) == set(MODELS)
    for name, space in SPACES.items():
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(3):
            trial = study.ask()
            make_model(name, {p: spec.suggest(trial, p) for p, spec in space.items()})  # accepted


def test_the_test_part_is_never_read(split: Split) -> None:
    """Same trials and scores whether the test part is real or garbage."""
    garbage = split.test.with_columns(pl.lit(-1).alias("item_id"), pl.lit(-1).alias("user_id"))
    a = tune_on_split("ease", split, n_trials=3)
    b = tune_on_split("ease", Split(split.train, split.validation, garbage), n_trials=3)
    assert [t["value"] for t in a.trials] == [t["value"] for t in b.trials]
    assert a.metric == "val_ndcg@10" and 0 < a.best_value <= 1


def test_epoch_trained_trials_report_and_are_pruned(split: Split, one_thread: None) -> None:
    seen: list[dict] = []
    fixed = {"epochs": 3, "n_factors": 8, "verbose": False, "batch_size": 64}
    result = tune_on_split("sasrec", split, n_trials=2, fixed=fixed, on_trial=seen.append)
    assert all(t["epochs_reported"] == 3 for t in seen)  # one validation score per epoch
    assert result.best_params["epochs"] == 3 and "dropout" in result.best_params
    # a pruner that stops everything after the first epoch: trials end pruned, after 1 epoch
    pruned: list[dict] = []
    with pytest.raises(ConfigError, match="no trial of sasrec completed"):
        tune_on_split(
            "sasrec",
            split,
            n_trials=2,
            fixed=fixed,
            on_trial=pruned.append,
            pruner=optuna.pruners.ThresholdPruner(lower=2.0),
        )
    assert [(t["state"], t["epochs_reported"]) for t in pruned] == [("pruned", 1), ("pruned", 1)]


def test_tune_errors(split: Split) -> None:
    with pytest.raises(ConfigError, match="no validation part"):
        tune_on_split("ease", Split(split.train, split.train.clear(), split.test), n_trials=1)
    with pytest.raises(ConfigError, match="nothing to search"):
        tune_on_split("ease", split, n_trials=1, fixed={"l2": 10.0})
    with pytest.raises(ConfigError, match="has no parameter"):
        tune_on_split("ease", split, n_trials=1, fixed={"l3": 10.0})


def test_tune_cli_writes_the_study_and_a_usable_best_config(
    ml100k_head: pl.DataFrame, tmp_path: Path
) -> None:
    events = tmp_path / "events.csv"
    ml100k_head.head(6000).select("user_id", "item_id", "timestamp").write_csv(events)
    out = tmp_path / "study"
    args = ["tune", "--dataset", str(events), "--model", "itemknn:weighted=true", "--trials", "3"]
    result = runner.invoke(app, [*args, "--output", str(out), "--validation-users", "200"])
    assert result.exit_code == 0, result.output
    study = json.loads((out / "study.json").read_text())
    assert len(study["trials"]) == 3 and all(t["params"]["weighted"] is True for t in study["trials"])
    assert "never read" in study["note"] and (out / "history.png").read_bytes()[:4] == b"\x89PNG"
    assert "| trial | state |" in (out / "report.md").read_text()
    best = load_config(out / "best.toml", dataset=str(events))
    assert best.models[0].name == "itemknn" and best.models[0].params == study["best_params"]


def test_mlflow_logging_to_a_local_store(
    split: Split, tmp_path: Path, ml100k_head: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = pytest.importorskip("mlflow", reason="MLflow is in the test extras; install vitrina[test]")
    monkeypatch.chdir(tmp_path)  # MLflow puts artifacts under ./mlruns beside a SQLite store
    from vitrina.evaluation.tracking import log_study_files, tune_logger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = tune_on_split(
        "ease", split, n_trials=2, on_trial=tune_logger(uri, "ease"), output=tmp_path / "s"
    )
    log_study_files(uri, "ease", result.files, result.best_params, result.best_value)
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["vitrina-tune-ease"], output_format="list")
    assert len(runs) == 3
    trial_values = sorted(r.data.metrics["val_ndcg"] for r in runs if "val_ndcg" in r.data.metrics)
    assert trial_values == sorted(t["value"] for t in result.trials)
    events = tmp_path / "events.csv"
    ml100k_head.head(3000).select("user_id", "item_id", "timestamp").write_csv(events)
    out = tmp_path / "bench"
    args = ["benchmark", "--dataset", str(events), "--models", "popular,ease", "--output", str(out)]
    cli = runner.invoke(app, [*args, "--mlflow-uri", uri])
    assert cli.exit_code == 0, cli.output
    bench = mlflow.search_runs(experiment_names=["vitrina-benchmark"], output_format="list")
    saved = json.loads((out / "results.json").read_text())
    by_name = {r.data.params["model"]: r for r in bench}
    assert set(by_name) == {"popular", "ease"}
    assert by_name["ease"].data.metrics["ndcg_at_10"] == pytest.approx(saved["runs"][1]["metrics"]["ndcg@10"])
    assert by_name["ease"].data.params["l2"] == "500.0"
