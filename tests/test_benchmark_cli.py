"""The benchmark command end to end: flags and TOML give the same run, results.json keeps its schema."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from vitrina.cli import app
from vitrina.errors import ConfigError
from vitrina.evaluation.config import parse_models
from vitrina.evaluation.report import pareto_front
from vitrina.models.popular import Popular

runner = CliRunner()


def test_parse_models_keeps_params_with_their_model() -> None:
    runs = parse_models("popular,ease:l2=500,esasrec:n_factors=64,n_blocks=1,als")
    assert [(r.name, r.params) for r in runs] == [
        ("popular", {}),
        ("ease", {"l2": "500"}),
        ("esasrec", {"n_factors": "64", "n_blocks": "1"}),
        ("als", {}),
    ]
    with pytest.raises(ConfigError):
        parse_models("l2=5,ease")


def test_pareto_front() -> None:
    assert pareto_front([(0.1, 0.5), (0.2, 0.4), (0.05, 0.3), (0.2, 0.5)]) == [3]
    assert pareto_front([(0.1, 0.5), (0.3, 0.2)]) == [0, 1]


def _run(args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def test_benchmark_ml100k_all_baselines(data_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run(
        [
            "benchmark",
            "--dataset",
            "ml-100k",
            "--split",
            "loo",
            "--models",
            "popular,itemknn,ease:l2=200,als:iterations=5,bpr:iterations=20",
            "--k",
            "10",
            "--output",
            str(out),
        ]
    )
    results = json.loads((out / "results.json").read_text())
    assert {"dataset", "split", "k", "runs"} <= set(results)
    assert (results["dataset"], results["split"], results["k"]) == ("ml-100k", "loo", 10)
    by_model = {r["model"]: r for r in results["runs"]}
    assert list(by_model) == ["popular", "itemknn", "ease", "als", "bpr"]
    for r in results["runs"]:
        assert {"model", "params", "metrics", "fit_seconds", "recommend_seconds"} <= set(r)
        for m in ("ndcg@10", "hr@10", "recall@10", "mrr@10", "coverage@10"):
            assert 0.0 <= r["metrics"][m] <= 1.0
        assert r["metrics"]["n_users_evaluated"] == 943
    assert by_model["ease"]["params"]["l2"] == 200.0
    assert by_model["als"]["params"]["seed"] == 0  # the run's seed is recorded
    # personalised models beat the popularity baseline on ml-100k leave-one-out
    assert by_model["ease"]["metrics"]["ndcg@10"] > by_model["popular"]["metrics"]["ndcg@10"]
    assert (out / "results.md").read_text().startswith("# ml-100k")
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_benchmark_from_toml_matches_flags(data_home: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "bench.toml"
    cfg.write_text(
        'dataset = "lastfm"\nsplit = "loo"\nk = 5\n\n'
        '[[models]]\nname = "itemknn"\nparams = { k_neighbors = 50 }\n\n'
        '[[models]]\nname = "popular"\n'
    )
    _run(["benchmark", "--config", str(cfg), "--output", str(tmp_path / "a")])
    _run(
        [
            "benchmark",
            "--dataset",
            "lastfm",
            "--k",
            "5",
            "--models",
            "itemknn:k_neighbors=50,popular",
            "--output",
            str(tmp_path / "b"),
        ]
    )
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [r["metrics"] for r in a["runs"]] == [r["metrics"] for r in b["runs"]]


def test_benchmark_temporal_on_a_file(data_home: Path, tmp_path: Path) -> None:
    _run(
        [
            "benchmark",
            "--dataset",
            str(data_home / "ml-100k" / "u.data"),
            "--format",
            "movielens",
            "--split",
            "temporal",
            "--last-days",
            "30",
            "--models",
            "popular",
            "--output",
            str(tmp_path),
        ]
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["split"] == "temporal" and results["runs"][0]["metrics"]["n_users_evaluated"] > 0


def test_temporal_benchmark_runs_sequential_models_and_marks_the_front(
    data_home: Path, tmp_path: Path
) -> None:
    """Sequential models (time-aware ones included) on the global time split: validation is the
    window before the test period, training ends before it; filter counts and the Pareto front
    are reported."""
    tiny = "n_factors=8,n_negatives=8,max_len=10,epochs=2,patience=1,verbose=false"
    _run(
        [
            "benchmark",
            "--dataset",
            "ml-100k",
            "--split",
            "temporal",
            "--last-days",
            "60",
            "--models",
            f"popular,ease,esasrec:{tiny},hstu:{tiny}",
            "--no-filter-seen",
            "--output",
            str(tmp_path),
        ]
    )
    results = json.loads((tmp_path / "results.json").read_text())
    data = results["data"]
    assert data["validation_events"] > 0 and data["test_removed_cold_users"] > 0
    assert "test_removed_seen_pairs" not in data  # the filter was switched off
    runs = {r["model"]: r for r in results["runs"]}
    assert runs["esasrec"]["epochs_trained"] >= 1 and runs["hstu"]["time_query"] == "history"
    assert runs["esasrec"]["time_query"] is None
    points = [(r["metrics"]["coverage@10"], r["metrics"]["ndcg@10"]) for r in results["runs"]]
    assert [r["pareto_front"] for r in results["runs"]] == [i in pareto_front(points) for i in range(4)]
    assert any(r["pareto_front"] for r in results["runs"])
    md = (tmp_path / "results.md").read_text()
    assert "Pareto front" in md and "**yes**" in md and "cold_users" in md


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "ml-100k", "--models", "nope"], "unknown model 'nope'"),
        (["--dataset", "ml-100k", "--models", "ease:l3=1"], "has no parameter 'l3'"),
        (["--dataset", "ml-100k", "--models", "ease:l2=abc"], "parameter 'l2': got 'abc'"),
        (["--dataset", "nowhere", "--models", "popular"], "give its --format"),
        (["--dataset", "ml-100k", "--models", "popular", "--split", "temporal"], "exactly one of cutoff"),
        (["--dataset", "ml-100k", "--models", "popular", "--validation-users", "0"], "validation_users"),
    ],
)
def test_benchmark_bad_input_is_a_clear_error(data_home: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["benchmark", *args])
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())


def test_fit_on_all_validates_a_sample_and_trains_on_the_rest(data_home: Path) -> None:
    """`vitrina train`: an early-stopping model holds out the last event of a sample of users
    only; every other event, each other user's latest included, is trained on, none twice."""
    from vitrina.data.datasets import load_dataset
    from vitrina.evaluation.training import fit_on_all

    seen: dict[str, pl.DataFrame] = {}

    class Recording(Popular):
        uses_validation = True

        def fit(self, data, *, validation=None):  # type: ignore[no-untyped-def, override]
            seen["train"], seen["validation"] = data, validation
            return super().fit(data)

    df = load_dataset("ml-100k").with_row_index("row")
    fit_on_all(Recording(), df, validation_users=100, seed=3)
    train, val = seen["train"], seen["validation"]
    assert val.height == val["user_id"].n_unique() == 100
    assert train.height + val.height == df.height
    assert set(train["row"]).isdisjoint(val["row"]) and set(train["row"]) | set(val["row"]) == set(df["row"])
    last = df.sort(["user_id", "timestamp", "row"]).group_by("user_id").agg(pl.col("row").last())
    assert set(val["row"]) <= set(last["row"])  # each validation event is its user's latest
