"""Benchmark runner: load -> filter -> split -> fit each model -> full-catalogue metrics -> report.

``results.json`` layout (stable; other tools parse it)::

    {"dataset": str, "split": str, "k": int,
     "runs": [{"model": str, "params": {...}, "metrics": {"ndcg@10": float, ...},
               "fit_seconds": float, "recommend_seconds": float, ...training summary}],
     "seed": int, "data": {...split sizes}, "vitrina_version": str}
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from vitrina import __version__
from vitrina.data.columns import ITEM, TIMESTAMP, USER, WEIGHT
from vitrina.data.datasets import DATASETS, resolve
from vitrina.data.features import item_features_for
from vitrina.data.filtering import k_core, to_implicit
from vitrina.data.loaders import load
from vitrina.data.splits import Split, leave_one_out, rolling_windows, temporal_split, user_ratio_split
from vitrina.errors import ConfigError, DataValidationError
from vitrina.evaluation.api import fit_on_split, history_of, popular_expectation, score_on_split
from vitrina.evaluation.config import DEFAULT_COLUMNS, BenchmarkConfig
from vitrina.evaluation.defaults import DEFAULTS, EXTENSIONS
from vitrina.evaluation.report import metric_cell, pareto_front, pareto_plot, results_markdown, split_title
from vitrina.models.base import Recommender
from vitrina.models.registry import make_model


def load_data(config: BenchmarkConfig) -> tuple[pl.DataFrame, Path, str]:
    if config.dataset in DATASETS:
        path, fmt = resolve(config.dataset)
        threshold = (
            config.implicit_threshold
            if config.implicit_threshold is not None
            else DATASETS[config.dataset].implicit_threshold
        )
    else:
        path, threshold = Path(config.dataset), config.implicit_threshold
        fmt = config.format or EXTENSIONS.get(path.suffix.lower())
        if fmt is None:
            raise ConfigError(
                f"dataset '{config.dataset}' is not a registered name ({', '.join(DATASETS)}) and its "
                f"extension {path.suffix or '(none)'!r} does not say the format; give its --format "
                "(movielens, s3rec, s3rec-ts, pairs, csv, tsv, parquet)"
            )
    mapping = config.column_mapping()
    if mapping is not None and fmt not in ("csv", "tsv", "parquet"):
        raise ConfigError(f"--columns applies to csv, tsv and parquet files, not to format {fmt!r}")
    raw = load(path, fmt, **({"columns": mapping} if mapping else {}))
    df = to_implicit(raw, threshold=threshold)
    if df.height == 0:
        raise DataValidationError(
            f"{path}: implicit_threshold={threshold} keeps no event (weights range from "
            f"{raw[WEIGHT].min()} to {raw[WEIGHT].max()}); lower it"
        )
    if config.min_user or config.min_item:
        df = k_core(df, min_user=config.min_user or 1, min_item=config.min_item or 1)
        if df.height == 0:
            raise DataValidationError(
                f"{path}: the k-core filter (min_user={config.min_user}, min_item={config.min_item}) "
                "leaves no event; lower them"
            )
    return df, path, fmt


def make_split(config: BenchmarkConfig, df: pl.DataFrame) -> Split:
    """The one split of ``config`` (every split but ``rolling``, which is several: :func:`make_splits`)."""
    if config.split == "rolling":
        raise ConfigError(
            "split 'rolling' is several splits (one per window); this command takes one: use "
            "temporal with last_days (the newest window alone)"
        )
    return make_splits(config, df)[0]


def make_splits(config: BenchmarkConfig, df: pl.DataFrame) -> list[Split]:
    """The splits a benchmark scores each model on: one, or one per rolling window, oldest first.
    Validation (early stopping) always lies before the test part: the second-to-last event
    (loo), the share of each user's events just before the tested ones (ratio), or the
    ``validation_days`` before the test period (temporal, rolling)."""
    if config.split == "loo":
        users = None if config.validation_users == "all" else config.validation_users
        return [leave_one_out(df, validation_users=users, seed=config.seed)]
    if config.split == "ratio":
        test_ratio, validation_ratio = config.ratios()
        return [
            user_ratio_split(
                df, test_ratio=test_ratio, validation_ratio=validation_ratio, filter_seen=config.filter_seen
            )
        ]
    if config.split == "rolling":
        return rolling_windows(
            df,
            n_windows=config.windows or int(DEFAULTS["windows"]),  # type: ignore[call-overload]
            test_days=config.last_days or 0.0,  # required for rolling by BenchmarkConfig
            step_days=config.step_days,
            train_days=config.train_days,
            validation_days=config.validation_days or config.last_days,
            filter_cold_items=config.filter_cold_items,
            filter_seen=config.filter_seen,
        )
    cutoff: Any = config.cutoff
    if cutoff is not None and cutoff.lstrip("-").replace(".", "", 1).isdigit():
        cutoff = float(cutoff)
    validation_days = config.validation_days if config.validation_days is not None else config.last_days
    if validation_days is None:  # a cutoff date: validate on as many days before it as the test spans
        t = temporal_split(df, cutoff=cutoff, filter_cold_items=False, filter_seen=False)
        validation_days = (float(df[TIMESTAMP].max()) - float(t.test[TIMESTAMP].min())) / 86_400 or 1.0
    return [
        temporal_split(
            df,
            cutoff=cutoff,
            last_days=config.last_days,
            validation_days=validation_days,
            filter_cold_items=config.filter_cold_items,
            filter_seen=config.filter_seen,
        )
    ]


_ORDER_ONLY_FORMATS = ("s3rec", "pairs")  # their ``timestamp`` is the position of an event


def has_time(dataset: str, fmt: str | None) -> bool:
    """Whether a registered dataset (or a file of format ``fmt``) holds real event times."""
    if dataset in DATASETS:
        return DATASETS[dataset].has_time
    return fmt not in _ORDER_ONLY_FORMATS


def check_time(config: BenchmarkConfig, models: list[tuple[str, Recommender]]) -> None:
    """Refuse, before any training, a model that reads event times on data that has only their order."""
    if has_time(config.dataset, config.format):
        return
    for name, model in models:
        if model.uses_time:
            with_time = [n for n, spec in DATASETS.items() if spec.has_time]
            raise ConfigError(
                f"model '{name}' reads event times (use_time=true), but dataset '{config.dataset}' has "
                f"only the order of events; use a dataset with timestamps ({', '.join(with_time)}) or "
                f"run '{name}:use_time=false'"
            )


def mark_pareto_front(runs: list[dict[str, Any]], k: int) -> None:
    """Set each run's ``pareto_front``: True when no other run of the benchmark has both NDCG@k
    and Coverage@k at least as high, one of them higher."""
    points = [(r["metrics"][f"coverage@{k}"], r["metrics"][f"ndcg@{k}"]) for r in runs]
    front = set(pareto_front(points))
    for i, run in enumerate(runs):
        run["pareto_front"] = i in front


@dataclass(frozen=True)
class _Planned:
    name: str
    model: Recommender


def plan_models(config: BenchmarkConfig, models: Mapping[str, Recommender] | None = None) -> list[_Planned]:
    """Build every model before any data is read, so a typo in the last spec fails in a second,
    not after the first models have been fitted. Models given as instances run after the specs."""
    planned = []
    for run in config.models:
        params = dict(run.params)
        model = make_model(run.name, params)
        if "seed" in model.get_params() and "seed" not in params:
            model = make_model(run.name, {**params, "seed": config.seed})
        planned.append(_Planned(run.name, model))
    for name, model in (models or {}).items():
        if not isinstance(model, Recommender):
            raise ConfigError(
                f"models[{name!r}]: expected a vitrina Recommender instance, got {type(model).__name__}"
            )
        planned.append(_Planned(name, model))
    names = [p.name for p in planned]
    if not planned:
        raise ConfigError("models: give at least one model (--models, [[models]] in TOML, or instances)")
    if len(set(names)) != len(names):
        raise ConfigError(f"models: names must be unique to tell the runs apart, got {names}")
    return planned


@contextmanager
def _step(console: Console, text: str) -> Iterator[None]:
    """A spinner with elapsed time while a long step runs (transient: the log line stays)."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        progress.add_task(text, total=None)
        yield


def run_benchmark(
    config: BenchmarkConfig,
    console: Console | None = None,
    models: Mapping[str, Recommender] | None = None,
) -> dict[str, Any]:
    """Run every model of ``config`` (and the unfitted ``models`` instances, by name); write
    ``results.json``, ``results.md`` and ``pareto.png`` under ``config.output`` (if set) and
    return the results.

    Every model is built before the data is loaded. If a model fails, the runs finished so far
    are written (with ``"failed": {"model", "error"}``) before the error propagates.
    """
    console = console or Console(stderr=True, log_path=False)
    planned = plan_models(config, models)
    check_time(config, [(p.name, p.model) for p in planned])
    if config.output is not None:
        _prepare_output(config.output)
    with _step(console, f"loading {escape(config.dataset)}"):
        df, path, fmt = load_data(config)
        splits = make_splits(config, df)
    rolling = config.split == "rolling"
    windows = [
        _prepare_window(config, df, path, split, f" window {j + 1}/{len(splits)}" if rolling else "")
        for j, split in enumerate(splits)
    ]
    # the splits hold every event again: drop the loaded table, keep its sizes for the report
    n_events, n_users, n_items = df.height, df[USER].n_unique(), df[ITEM].n_unique()
    del df, splits
    console.log(
        f"{escape(config.dataset)}: {n_events:,} events, {n_users:,} users, {n_items:,} items"
        + ("" if rolling else f"; split {config.split}: {_sizes(windows[0].split)}")
    )
    first = windows[0]
    results: dict[str, Any] = {
        "dataset": config.dataset,
        "split": config.split,
        "k": config.k,
        "runs": [],
        "seed": config.seed,
        "validation_users": config.validation_users,
        "columns": list(config.metrics),
        "data": {"events": n_events} if rolling else {"events": n_events, **first.split.summary()},
        "eval_users": None
        if first.population is None or rolling
        else {"sampled": first.split.test[USER].n_unique(), "of": first.population, "seed": config.seed},
        "vitrina_version": __version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    if rolling:
        results["windows"] = [w.describe(j) for j, w in enumerate(windows)]
        for j, w in enumerate(windows):
            console.log(f"window {j + 1}/{len(windows)}: {_sizes(w.split)}")
    while planned:  # a model is dropped once reported, so fitted models do not pile up in memory
        item = planned.pop(0)
        try:
            records = [
                _run_one(item, config, w.split, path, fmt, w.expected, console, w.population, w.label)
                for w in windows
            ]
        except BaseException as exc:
            results["failed"] = {"model": item.name, "error": f"{type(exc).__name__}: {exc}"}
            if results["runs"] and config.output is not None:
                write_results(results, config.output)
                console.log(
                    f"{escape(item.name)} failed; wrote the {len(results['runs'])} finished runs to "
                    f"{escape(str(config.output))}"
                )
            raise
        results["runs"].append(combine_windows(records) if rolling else records[0])
        mark_pareto_front(results["runs"], config.k)
    console.print(results_table(results, console.width))
    if config.output is not None:
        write_results(results, config.output)
        console.log(f"wrote {escape(str(config.output))}/results.json, results.md, pareto.png")
    return results


@dataclass(frozen=True)
class _Window:
    """One split to score every model on, with what its scoring needs."""

    split: Split
    expected: pl.DataFrame  # the popular baseline's lists, for serendipity
    population: int | None  # test users sampled from (eval_users), or None: all are evaluated
    label: str  # " window 2/3" in logs, "" for a single split

    def describe(self, index: int) -> dict[str, Any]:
        """The window's number, test period (UTC, ISO) and part sizes, for ``results.json``."""
        times = self.split.test[TIMESTAMP]
        sample = {} if self.population is None else {"eval_users_of": self.population}
        return {
            "window": index + 1,
            "test_from": _iso(times.min()),
            "test_to": _iso(times.max()),
            **self.split.summary(),
            **sample,
        }


def _iso(seconds: Any) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(float(seconds), UTC).isoformat(timespec="seconds")


def _sizes(split: Split) -> str:
    return ", ".join(f"{k}={v:,}" for k, v in split.summary().items())


def _prepare_window(
    config: BenchmarkConfig, df: pl.DataFrame, path: Path, split: Split, label: str
) -> _Window:
    """Check that ``split`` has users to evaluate, sample them (``eval_users``) and compute the
    popular lists serendipity is measured against."""
    evaluable = split.test.join(history_of(split).select(USER).unique(), on=USER, how="semi")
    if evaluable.height == 0:
        raise DataValidationError(
            f"{path}: no user can be evaluated{label}: the {config.split} split leaves "
            f"{split.test[USER].n_unique()} test user(s), none with earlier events to learn from "
            f"({df.height} event(s), {df[USER].n_unique()} user(s)); "
            "evaluation needs users with at least two events"
        )
    population = None
    if config.eval_users is not None:
        split, population = sample_test_users(split, evaluable, config.eval_users, config.seed)
    expected = popular_expectation(history_of(split), split.test, config.k)
    return _Window(split, expected, population, label)


def combine_windows(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One model's run over rolling windows: every metric's mean and sample standard deviation
    across windows (``null`` with one window), mean fit and recommend seconds per window, and
    each window's own record under ``windows``."""
    names = list(records[0]["metrics"])
    values = {n: [float(r["metrics"][n]) for r in records] for n in names}
    return {
        "model": records[0]["model"],
        "params": records[0]["params"],
        "metrics": {n: statistics.fmean(v) for n, v in values.items()},
        "metrics_sd": {n: statistics.stdev(v) if len(v) > 1 else None for n, v in values.items()},
        "fit_seconds": statistics.fmean(r["fit_seconds"] for r in records),
        "recommend_seconds": statistics.fmean(r["recommend_seconds"] for r in records),
        "windows": [
            {"window": j + 1, **{k: v for k, v in r.items() if k not in ("model", "params")}}
            for j, r in enumerate(records)
        ],
    }


def _run_one(
    item: _Planned,
    config: BenchmarkConfig,
    split: Split,
    path: Path,
    fmt: str,
    expected: pl.DataFrame,
    console: Console,
    population: int | None = None,
    label: str = "",
) -> dict[str, Any]:
    model, k = item.model, config.k
    console.log(f"[bold]{escape(item.name)}[/bold]{label}: fitting {escape(repr(model))}")
    start = time.perf_counter()
    with _step(console, f"fitting {escape(item.name)}"):
        fit_on_split(model, split)
    fit_seconds = time.perf_counter() - start
    with _step(console, f"ranking the catalogue for {split.test[USER].n_unique():,} test users"):
        vectors = item_features_for(path, fmt, model.items_)
        result, n_cold = score_on_split(
            model, split, k=k, item_vectors=vectors, expected=expected, population=population
        )
    record: dict[str, Any] = {
        "model": item.name,
        "params": _jsonable(model.get_params()),
        "metrics": result.metrics,
        "fit_seconds": round(fit_seconds, 3),
        "recommend_seconds": round(result.recommend_seconds, 3),
        "test_events_cold_items": n_cold,
        # which time a time-reading model scores from: the history's own ("history", the default)
        # or the held-out event's ("request", the request_time option); None: reads no time
        "time_query": ("request" if model.get_params().get("request_time") else "history")
        if model.uses_time
        else None,
    }
    if result.ci95:
        record["ci95"] = {name: list(bounds) for name, bounds in result.ci95.items()}
    summary = dict(getattr(model, "training_summary_", {}))
    record.update(summary)
    shown = " ".join(
        f"{m}@{k}={result.metrics[f'{m}@{k}']:.4f}" for m in config.metrics if f"{m}@{k}" in result.metrics
    )
    console.log(f"{escape(item.name)}{label}: {shown} fit {fit_seconds:.1f}s")
    if not_converged(summary):
        console.log(
            f"[yellow]{escape(item.name)}{label}: not converged[/yellow] — the best validation epoch is "
            f"the last one ({summary['best_epoch']}); raise epochs to let early stopping decide"
        )
    return record


def sample_test_users(split: Split, evaluable: pl.DataFrame, n: int, seed: int) -> tuple[Split, int]:
    """``split`` with its test part cut to ``n`` users drawn at random (``seed``) from the
    ``evaluable`` test events' users, and how many users there were to draw from."""
    users = evaluable[USER].unique().sort()
    if n >= len(users):
        return split, len(users)
    chosen = users.gather(np.sort(np.random.default_rng(seed).choice(len(users), n, replace=False)))
    return replace(split, test=split.test.filter(pl.col(USER).is_in(chosen.implode()))), len(users)


def not_converged(summary: Mapping[str, Any]) -> bool:
    """Early stopping never triggered: the best validation score came at the final epoch."""
    best, trained = summary.get("best_epoch"), summary.get("epochs_trained")
    return summary.get("best_val_recall_at_10") is not None and best is not None and best == trained


def _any_not_converged(run: Mapping[str, Any]) -> bool:
    return not_converged(run) or any(not_converged(w) for w in run.get("windows", []))


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(params, default=str))


def results_table(results: dict[str, Any], width: int | None = None) -> Table:
    """The headline columns (``results["columns"]``, in that order), dropping trailing metric
    columns that would not fit ``width`` characters instead of squeezing every cell to ``0.…``."""
    k = results["k"]
    names = display_columns(results)
    runs = results["runs"]
    cells = [
        [escape(r["model"]) + (" (not converged)" if _any_not_converged(r) else "")]
        + [metric_cell(r, f"{m}@{k}") for m in names]
        + [f"{r['fit_seconds']:.1f}", f"{r['recommend_seconds']:.2f}"]
        for r in runs
    ]
    headers = ["model", *(f"{m}@{k}" for m in names), "fit s", "rec s"]
    keep = list(range(len(headers)))
    while True:
        dropped = len(headers) - len(keep)
        caption = f"+{dropped} columns in results.md (pick: --metrics)" if dropped else None
        table = Table(
            title=f"{escape(str(results['dataset']))} · {split_title(results)} · k={k}",
            caption=caption,
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
        )
        for i in keep:
            table.add_column(headers[i], justify="left" if i == 0 else "right", no_wrap=True)
        for row in cells:
            table.add_row(*(row[i] for i in keep))
        if width is None or len(keep) <= 3 or _natural_width(table) <= width:
            return table
        keep.pop(-3)  # the last metric column; the model and the two timings stay


def _natural_width(table: Table) -> int:
    console = Console(width=10_000)
    return Measurement.get(console, console.options, table).maximum


def display_columns(results: dict[str, Any]) -> list[str]:
    """Metric names shown in the console and results.md: the run's ``columns`` that were computed."""
    k = results["k"]
    wanted = results.get("columns") or list(DEFAULT_COLUMNS)
    return [m for m in wanted if any(f"{m}@{k}" in r["metrics"] for r in results["runs"])]


def _prepare_output(output: Path) -> None:
    """Create the output folder before any work, so a bad ``--output`` fails in a second, not after
    the run."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output {output}: exists and is not a folder; choose a folder path")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"output {output}: cannot create the folder ({exc.strerror or exc})") from exc


def _json_safe(value: Any) -> Any:
    """NaN and infinities (a metric undefined for these data) become ``null``: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_results(results: dict[str, Any], output: Path) -> None:
    """``results.json`` (strict JSON: an undefined metric is ``null``), ``results.md``, ``pareto.png``."""
    _prepare_output(output)
    (output / "results.json").write_text(json.dumps(_json_safe(results), indent=2, allow_nan=False))
    (output / "results.md").write_text(results_markdown(results, display_columns(results)))
    pareto_plot(results, output / "pareto.png")
