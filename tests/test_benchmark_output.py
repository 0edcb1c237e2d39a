"""Benchmark output a person reads (issue 15): the table fits the terminal, log lines carry no file
links, results.md follows the console's columns, specs are validated before data is read, and the
finished runs are written when a later model fails."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from vitrina.cli import app
from vitrina.errors import ConfigError
from vitrina.evaluation.benchmark import not_converged, results_table, run_benchmark
from vitrina.evaluation.config import make_config, parse_metrics
from vitrina.evaluation.report import results_markdown
from vitrina.models.popular import Popular

runner = CliRunner()
ALL = ("ndcg", "hr", "recall", "precision", "mrr", "map", "coverage", "novelty", "arp", "ild", "serendipity")


def _results(columns: list[str]) -> dict:
    metrics = {f"{m}@10": 0.012345 + i / 100 for i, m in enumerate(ALL)}
    runs = [
        {"model": name, "params": {}, "metrics": metrics, "fit_seconds": 31.5, "recommend_seconds": 0.42}
        for name in ("popular", "itemknn", "ease", "sasrec-ss")
    ]
    return {"dataset": "beauty", "split": "loo", "k": 10, "seed": 0, "runs": runs, "columns": columns}


def _render(results: dict, width: int) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(results_table(results, width))
    return console.export_text()


@pytest.mark.parametrize("width", [80, 120])
def test_table_fits_the_terminal_without_cut_cells(width: int) -> None:
    text = _render(_results(list(ALL)), width)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    assert "0.0123" in text and "ndcg@10" in text and "fit s" in text and "rec s" in text
    if width == 80:  # eleven metrics cannot fit: trailing ones go, and the caption says where they are
        assert "serendipity@10" not in text and "columns in results.md (pick: --metrics)" in text


def test_default_columns_fit_80() -> None:
    text = _render(_results(["ndcg", "hr", "recall", "mrr", "coverage"]), 80)
    assert "…" not in text and "columns in results.md" not in text
    for header in ("ndcg@10", "hr@10", "recall@10", "mrr@10", "coverage@10"):
        assert header in text


def test_results_md_follows_the_console_order() -> None:
    md = results_markdown(_results(["coverage", "ndcg"]), ["coverage", "ndcg"])
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells[:3] == ["model", "coverage@10", "ndcg@10"]
    assert set(cells[3:-3]) == {f"{m}@10" for m in ALL} - {"coverage@10", "ndcg@10"}
    assert cells[-1].startswith("Pareto front")


def test_parse_metrics() -> None:
    assert parse_metrics("ndcg, HR@10,coverage") == ("ndcg", "hr", "coverage")
    with pytest.raises(ConfigError, match=r"unknown metric 'ndgc'.*choose from ndcg"):
        parse_metrics("ndgc,hr")


def test_not_converged() -> None:
    assert not_converged({"best_epoch": 50, "epochs_trained": 50, "best_val_recall_at_10": 0.1})
    assert not not_converged({"best_epoch": 40, "epochs_trained": 50, "best_val_recall_at_10": 0.1})
    assert not not_converged({})  # no early stopping at all: nothing to converge
    results = _results(["ndcg"])
    results["runs"][3].update(best_epoch=3, epochs_trained=3, best_val_recall_at_10=0.2)
    assert "sasrec-ss (not converged)" in _render(results, 120)


@pytest.fixture
def events_csv(tmp_path: Path, ml100k_head: pl.DataFrame) -> Path:
    path = tmp_path / "events.csv"
    ml100k_head.head(5000).select("user_id", "item_id", "timestamp").write_csv(path)
    return path


def test_every_spec_is_checked_before_data_is_read(tmp_path: Path) -> None:
    missing = tmp_path / "not-there.csv"  # never read: the typo in the last spec is found first
    result = runner.invoke(
        app,
        [
            "benchmark",
            "--dataset",
            str(missing),
            "--format",
            "csv",
            "--models",
            "popular,ease,esasrec:factor=64",
        ],
    )
    assert result.exit_code != 0
    assert "model 'esasrec' has no parameter 'factor'" in " ".join(result.output.split())


def test_cli_metrics_columns_and_no_file_links(events_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["benchmark", "--dataset", str(events_csv), "--format", "csv", "--models", "popular"]
    result = runner.invoke(app, [*args, "--metrics", "hr,coverage", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "benchmark.py:" not in result.output  # rich's log-path links
    assert "hr@10" in result.output and "ndcg@10" not in result.output.split("popular:")[-1]
    header = (out / "results.md").read_text().splitlines()[2]
    assert header.startswith("| model | hr@10 | coverage@10 |")
    saved = json.loads((out / "results.json").read_text())
    assert saved["columns"] == ["hr", "coverage"] and "ndcg@10" in saved["runs"][0]["metrics"]


class _Broken(Popular):
    def _fit(self, data, validation):  # type: ignore[no-untyped-def]
        raise RuntimeError("out of memory (simulated)")


def test_finished_runs_are_written_when_a_later_model_fails(events_csv: Path, tmp_path: Path) -> None:
    config = make_config(
        {"dataset": str(events_csv), "format": "csv", "models": [{"name": "popular"}], "output": tmp_path}
    )
    with pytest.raises(RuntimeError, match="simulated"):
        run_benchmark(config, models={"broken": _Broken()})
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["model"] for r in saved["runs"]] == ["popular"]
    assert saved["failed"] == {"model": "broken", "error": "RuntimeError: out of memory (simulated)"}
    assert "broken" in (tmp_path / "results.md").read_text()


def test_run_benchmark_takes_model_instances(events_csv: Path) -> None:
    config = make_config({"dataset": str(events_csv), "format": "csv"})
    results = run_benchmark(config, models={"mine": Popular(), "recent": Popular(days=30)})
    assert [r["model"] for r in results["runs"]] == ["mine", "recent"]
    with pytest.raises(ConfigError, match="at least one model"):
        run_benchmark(config)
    with pytest.raises(ConfigError, match="expected a vitrina Recommender"):
        run_benchmark(config, models={"x": object()})  # type: ignore[dict-item]
