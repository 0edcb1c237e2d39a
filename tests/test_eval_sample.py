"""Evaluation on a seeded random sample of test users with a confidence interval per metric (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vitrina.cli import app
from vitrina.data.synth import SynthConfig, write_synth
from vitrina.evaluation.benchmark import run_benchmark
from vitrina.evaluation.config import make_config
from vitrina.evaluation.evaluate import confidence_interval


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = write_synth(
        SynthConfig(events=40_000, users=3_000, items=500, seed=2, categories=8),
        tmp_path_factory.mktemp("synth") / "log.parquet",
    )
    return path


def bench(log: Path, **extra: object) -> dict:
    models = [{"name": "popular"}, {"name": "als", "params": {"factors": 16, "iterations": 3}}]
    return run_benchmark(make_config({"dataset": str(log), "models": models, **extra}))


def test_interval_shrinks_to_the_mean_for_the_whole_population() -> None:
    values = np.array([0.0, 1.0, 0.5, np.nan, 1.0])
    assert confidence_interval(values, population=4) == (0.625, 0.625)
    lo, hi = confidence_interval(values, population=1_000)
    assert lo < 0.625 < hi
    wide = confidence_interval(values, population=10**9)
    assert wide[0] < lo and wide[1] > hi


def test_interval_covers_the_population_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    population = (rng.random(5_000) < 0.2).astype(float)
    covered = 0
    for _ in range(400):
        lo, hi = confidence_interval(rng.choice(population, 500, replace=False), population=5_000)
        covered += lo <= population.mean() <= hi
    assert 0.92 <= covered / 400 <= 0.98


def test_sampled_benchmark_reports_intervals_around_the_full_result(log: Path, tmp_path: Path) -> None:
    full = bench(log)
    sampled = bench(log, eval_users=800, output=tmp_path)
    again = bench(log, eval_users=800)
    other = bench(log, eval_users=800, seed=1)
    assert sampled["eval_users"] == {"sampled": 800, "of": 3_000, "seed": 0}
    assert sampled["runs"][1]["metrics"]["n_users_evaluated"] == 800
    for run, ref in zip(sampled["runs"], full["runs"], strict=True):
        lo, hi = run["ci95"]["ndcg@10"]
        assert lo < run["metrics"]["ndcg@10"] < hi
        assert lo <= ref["metrics"]["ndcg@10"] <= hi  # the sample's interval holds the full value
        assert "coverage@10" not in run["ci95"]  # a catalogue-level metric: no per-user interval
    assert [r["metrics"] for r in again["runs"]] == [r["metrics"] for r in sampled["runs"]]
    assert [r["metrics"] for r in other["runs"]] != [r["metrics"] for r in sampled["runs"]]
    assert "ci95" not in full["runs"][0] and full["eval_users"] is None
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["runs"][0]["ci95"]["hr@10"] == pytest.approx(sampled["runs"][0]["ci95"]["hr@10"])
    assert "95% confidence intervals" in (tmp_path / "results.md").read_text()


def test_more_users_than_the_test_part_evaluates_everyone(log: Path) -> None:
    result = bench(log, eval_users=10**6)
    assert result["eval_users"] == {"sampled": 3_000, "of": 3_000, "seed": 0}
    lo, hi = result["runs"][0]["ci95"]["ndcg@10"]
    assert lo == pytest.approx(hi)


def test_cli_refuses_a_non_positive_sample(log: Path) -> None:
    result = CliRunner().invoke(
        app, ["benchmark", "--dataset", str(log), "--models", "popular", "--eval-users", "0"]
    )
    assert result.exit_code == 2 and "eval_users" in result.output
