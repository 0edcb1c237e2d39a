"""Benchmark runner: load -> filter -> split -> fit each model -> full-catalogue metrics -> report.

``results.json`` layout (stable; other tools parse it)::

    {"dataset": str, "split": str, "k": int,
     "runs": [{"model": str, "params": {...}, "metrics": {"ndcg@10": float, ...},
               "fit_seconds": float, "recommend_seconds": float, ...training summary}],
     "seed": int, "data": {...split sizes}, "vitrina_version": str}
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from vitrina import __version__
from vitrina.data.columns import ITEM, USER
from vitrina.data.datasets import DATASETS, resolve
from vitrina.data.features import item_features_for
from vitrina.data.filtering import k_core, to_implicit
from vitrina.data.loaders import load
from vitrina.data.splits import Split, leave_one_out, temporal_split
from vitrina.errors import ConfigError
from vitrina.evaluation.config import BenchmarkConfig
from vitrina.evaluation.evaluate import build_truth, evaluate, history_dataset
from vitrina.evaluation.report import pareto_plot, results_markdown
from vitrina.models.registry import make_model

HEADLINE = ("ndcg", "hr", "recall", "mrr", "map", "coverage", "novelty", "arp", "ild", "serendipity")


def load_data(config: BenchmarkConfig) -> tuple[pl.DataFrame, Path, str]:
    if config.dataset in DATASETS:
        path, fmt = resolve(config.dataset)
        threshold = (
            config.implicit_threshold
            if config.implicit_threshold is not None
            else DATASETS[config.dataset].implicit_threshold
        )
    else:
        if config.format is None:
            raise ConfigError(
                f"dataset '{config.dataset}' is not a registered name ({', '.join(DATASETS)}); "
                "to read it as a file give its --format"
            )
        path, fmt, threshold = Path(config.dataset), config.format, config.implicit_threshold
    df = to_implicit(load(path, fmt), threshold=threshold)
    if config.min_user or config.min_item:
        df = k_core(df, min_user=config.min_user or 1, min_item=config.min_item or 1)
    return df, path, fmt


def make_split(config: BenchmarkConfig, df: pl.DataFrame) -> Split:
    if config.split == "loo":
        users = None if config.validation_users == "all" else config.validation_users
        return leave_one_out(df, validation_users=users, seed=config.seed)
    cutoff: Any = config.cutoff
    if cutoff is not None and cutoff.lstrip("-").replace(".", "", 1).isdigit():
        cutoff = float(cutoff)
    return temporal_split(
        df, cutoff=cutoff, last_days=config.last_days, validation_days=config.validation_days
    )


def run_benchmark(config: BenchmarkConfig, console: Console | None = None) -> dict[str, Any]:
    """Run every model of ``config``; write ``results.json``, ``results.md`` and ``pareto.png``
    under ``config.output`` (if set) and return the results."""
    console = console or Console(stderr=True)
    with console.status(f"loading {config.dataset}"):
        df, path, fmt = load_data(config)
        split = make_split(config, df)
    history_df = pl.concat([split.train, split.validation], how="vertical_relaxed")
    console.log(
        f"{config.dataset}: {df.height:,} events, {df[USER].n_unique():,} users, "
        f"{df[ITEM].n_unique():,} items; "
        f"split {config.split}: " + ", ".join(f"{k}={v:,}" for k, v in split.summary().items())
    )
    expected_external = _popular_expectation(history_df, split.test, config.k)
    runs = []
    for run in config.models:
        params = dict(run.params)
        model = make_model(run.name, params)
        if "seed" in model.get_params() and "seed" not in params:
            params["seed"] = config.seed
            model = make_model(run.name, params)
        console.log(f"[bold]{run.name}[/bold]: fitting {model!r}")
        start = time.perf_counter()
        if model.uses_validation:
            model.fit(split.train, validation=split.validation)
        else:
            model.fit(history_df)
        fit_seconds = time.perf_counter() - start
        history = history_dataset(model, history_df)
        truth = build_truth(history, split.test)
        expected = _to_internal(expected_external, model, truth.users)
        vectors = item_features_for(path, fmt, model.items_)
        result = evaluate(model, history, truth, k=config.k, item_vectors=vectors, expected=expected)
        record: dict[str, Any] = {
            "model": run.name,
            "params": _jsonable(model.get_params()),
            "metrics": result.metrics,
            "fit_seconds": round(fit_seconds, 3),
            "recommend_seconds": round(result.recommend_seconds, 3),
            "test_events_cold_items": truth.n_cold_events,
        }
        record.update(getattr(model, "training_summary_", {}))
        runs.append(record)
        k = config.k
        console.log(
            f"{run.name}: ndcg@{k}={result.metrics[f'ndcg@{k}']:.4f} hr@{k}={result.metrics[f'hr@{k}']:.4f} "
            f"coverage@{k}={result.metrics[f'coverage@{k}']:.4f} fit {fit_seconds:.1f}s"
        )
    results = {
        "dataset": config.dataset,
        "split": config.split,
        "k": config.k,
        "runs": runs,
        "seed": config.seed,
        "validation_users": config.validation_users,
        "data": {"events": df.height, **split.summary()},
        "vitrina_version": __version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    console.print(results_table(results))
    if config.output is not None:
        write_results(results, config.output)
        console.log(f"wrote {config.output}/results.json, results.md, pareto.png")
    return results


def _popular_expectation(history: pl.DataFrame, test: pl.DataFrame, k: int) -> pl.DataFrame:
    """The obvious recommendations (most popular unseen items) per test user, for serendipity."""
    popular = make_model("popular").fit(history)
    users = test[USER].unique(maintain_order=True)
    known = users.filter(pl.Series(popular.users_.to_internal(users, strict=False) >= 0))
    return popular.recommend(known, k)


def _to_internal(expected: pl.DataFrame, model: Any, users: np.ndarray) -> np.ndarray:
    """Expected recommendations as an (n_users, k) array in the model's index space (-1 = none)."""
    k = int(expected["rank"].max() or 1)
    out = np.full((len(users), k), -1, dtype=np.int64)
    u = model.users_.to_internal(expected[USER], strict=False)
    i = model.items_.to_internal(expected[ITEM], strict=False)
    rows = np.searchsorted(users, u)
    ok = (u >= 0) & (i >= 0) & (rows < len(users))
    ok[ok] &= users[rows[ok]] == u[ok]
    out[rows[ok], expected["rank"].to_numpy()[ok] - 1] = i[ok]
    return out


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(params, default=str))


def results_table(results: dict[str, Any]) -> Table:
    k = results["k"]
    table = Table(title=f"{results['dataset']} · split {results['split']} · k={k}")
    table.add_column("model")
    columns = [f"{m}@{k}" for m in HEADLINE if any(f"{m}@{k}" in r["metrics"] for r in results["runs"])]
    for c in columns:
        table.add_column(c, justify="right")
    table.add_column("fit s", justify="right")
    table.add_column("rec s", justify="right")
    for r in results["runs"]:
        table.add_row(
            r["model"],
            *[f"{r['metrics'].get(c, float('nan')):.4f}" for c in columns],
            f"{r['fit_seconds']:.1f}",
            f"{r['recommend_seconds']:.2f}",
        )
    return table


def write_results(results: dict[str, Any], output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(results, indent=2))
    (output / "results.md").write_text(results_markdown(results))
    pareto_plot(results, output / "pareto.png")
