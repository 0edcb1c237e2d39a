"""Discoverability (issue 15): defaults and field references come from the code, so they cannot
drift; your own CSV from the command line with its format inferred and its columns mapped."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from vitrina.cli import app
from vitrina.evaluation.config import BenchmarkConfig, load_config
from vitrina.models.registry import MODELS, model_defaults
from vitrina.reference import reference_markdown, sections

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_reference_page_is_current() -> None:
    assert (REPO / "docs" / "reference.md").read_text() == reference_markdown(), (
        "regenerate: python -m vitrina.reference > docs/reference.md"
    )
    for model, _ in sections():
        undocumented = [n for n, f in model.model_fields.items() if not f.description]
        assert not undocumented, f"{model.__name__}: give these fields a description: {undocumented}"
    for field in ("`q`", "`kind`", "`sequential`", "`denominator_event`"):  # the A/B spec's fields
        assert field in reference_markdown()


def test_example_bench_toml_is_valid_and_names_every_key() -> None:
    path = REPO / "examples" / "bench.toml"
    config = load_config(path)
    assert [m.name for m in config.models] == ["popular", "ease", "als", "esasrec"]
    text = path.read_text()
    missing = [
        f
        for f in BenchmarkConfig.model_fields
        if not re.search(rf"^#? ?\[*{f}\]* ?=|\[\[{f}\]\]", text, re.M)
    ]
    assert not missing, f"examples/bench.toml does not show {missing}"


def test_models_command_shows_every_default() -> None:
    result = runner.invoke(app, ["models"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for name in ("itemknn", "ease", "als", "bpr"):
        for key, value in model_defaults(name).items():
            assert f"{key}={value}" in text, (name, key)
    for key in ("epochs", "patience", "lr", "batch_size", "max_len"):  # shared by the sequential models
        assert f"{key}={model_defaults('esasrec')[key]}" in text
    assert "k_neighbors=100" in text and "epochs=200" in text
    assert set(MODELS) <= set(re.findall(r"[a-z0-9-]+", text))


def test_benchmark_help_defaults_are_the_config_defaults() -> None:
    command = typer.main.get_command(app).commands["benchmark"]  # type: ignore[attr-defined]
    shown = {p.name: p.show_default for p in command.params}
    for name in ("split", "k", "seed", "validation_users", "metrics"):
        default = BenchmarkConfig.model_fields[name].default
        expected = ",".join(default) if isinstance(default, tuple) else str(default)
        assert shown[name] == expected, name


@pytest.fixture
def visitor_csv(tmp_path: Path, ml100k_head: pl.DataFrame) -> Path:
    path = tmp_path / "train.csv"
    ml100k_head.head(4000).select(visitor="user_id", sku="item_id", ts="timestamp").write_csv(path)
    return path


def test_csv_format_from_extension_and_columns_mapped(visitor_csv: Path, tmp_path: Path) -> None:
    args = [
        "benchmark",
        "--dataset",
        str(visitor_csv),
        "--models",
        "popular",
        "--output",
        str(tmp_path / "r"),
    ]
    result = runner.invoke(app, [*args, "--columns", "user=visitor,item=sku,timestamp=ts"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "results.json").read_text())["data"]["events"] == 4000
    unmapped = runner.invoke(app, args)
    assert unmapped.exit_code != 0 and "missing column(s)" in " ".join(unmapped.output.split())
    bad = runner.invoke(app, [*args, "--columns", "user=visitor,itm=sku"])
    assert "unknown key(s) ['itm']" in " ".join(bad.output.split())


def test_unknown_extension_asks_for_the_format(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["benchmark", "--dataset", str(tmp_path / "events.log"), "--models", "popular"]
    )
    assert result.exit_code != 0
    assert "extension '.log' does not say the format" in " ".join(result.output.split())


def test_train_records_lineage(visitor_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    args = ["train", "--dataset", str(visitor_csv), "--model", "popular", "--output", str(out)]
    result = runner.invoke(app, [*args, "--columns", "user=visitor,item=sku,timestamp=ts"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    data = config["lineage"]["data"]
    assert data["sha256"] == hashlib.sha256(visitor_csv.read_bytes()).hexdigest()
    assert data["events"] == 4000 and data["source"] == str(visitor_csv)
    assert config["saved_at"].endswith("+00:00") and config["vitrina_version"]
