"""The ``vitrina`` command line: datasets, benchmark, train (and serve / ab when installed parts register)."""

from __future__ import annotations

import os
import sys

# Before torch loads OpenMP: idle worker threads sleep instead of spinning. On a shared CPU spinning
# threads made small training steps up to ~50x slower (docs/sequential.md); set it to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from vitrina.errors import ConfigError, VitrinaError
from vitrina.evaluation.defaults import DEFAULTS
from vitrina.experiments.cli import app as ab_app
from vitrina.serving.cli import export_log, serve


class _ErrorBoundary(typer.core.TyperGroup):
    """Every error of every subcommand ends here: a user error (bad input, missing or unreadable file)
    is one line and exit 2; anything else is one line with a hint and exit 1, the traceback only
    under ``vitrina --debug``. Messages are printed literally, never as Rich markup."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as exc:
            if ctx.meta.get(_DEBUG) or os.environ.get("VITRINA_DEBUG"):
                raise
            if isinstance(exc, VitrinaError | OSError):
                raise _fail(exc) from None
            err.print(
                f"[bold red]error:[/bold red] unexpected {type(exc).__name__}: {escape(str(exc))}\n"
                "This is a bug in vitrina; rerun with `vitrina --debug ...` for the traceback and report it.",
                soft_wrap=True,
            )
            raise typer.Exit(code=1) from None


_DEBUG = "vitrina.debug"
app = typer.Typer(
    help="vitrina: recommender systems end to end.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=_ErrorBoundary,
)
datasets_app = typer.Typer(help="List, download and synthesise datasets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(
    ab_app, name="ab", help="A/B experiments: design, analyze; causal effects: did, synth; off-policy: ope."
)
app.command("serve", help="Serve a saved model over HTTP: /recommend, /slate, /events, /metrics.")(serve)
ab_app.command("export", help="Export the service's event log for `vitrina ab analyze`.")(export_log)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160, log_path=False)


# defaults shown by --help, from the same table BenchmarkConfig uses (flags stay None so TOML wins)
_DEFAULT = {k: ",".join(v) if isinstance(v, tuple) else str(v) for k, v in DEFAULTS.items()}


def _fail(exc: Exception) -> typer.Exit:
    """Print a user error as one line (its text literally) and return the exit to raise."""
    err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(code=2)


@app.callback()
def _main(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", help="show the full traceback of an unexpected error")
    ] = False,
) -> None:
    """vitrina: recommender systems end to end."""
    ctx.meta[_DEBUG] = debug


@datasets_app.command("list")
def datasets_list() -> None:
    """Known datasets and whether they are present under the data home."""
    from rich.table import Table

    from vitrina.data.datasets import DATASETS, data_home, resolve

    table = Table(title=f"data home: {data_home()}")
    for col in ("name", "present", "description"):
        table.add_column(col)
    for name, spec in DATASETS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                present = str(resolve(name)[0].relative_to(data_home()))
            except VitrinaError:
                present = "no (download)" if spec.archive else "no"
        table.add_row(name, present, spec.description)
    Console().print(table)


@datasets_app.command("download")
def datasets_download(
    name: Annotated[str, typer.Argument(help="dataset name, e.g. ml-100k")],
    url: Annotated[
        str | None, typer.Option(help="mirror address of the official archive (checksums still apply)")
    ] = None,
    home: Annotated[Path | None, typer.Option(help="data home (default $VITRINA_DATA_HOME)")] = None,
) -> None:
    """Fetch an official archive, verify its checksums and unpack it under the data home."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from vitrina.data.datasets import download

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
    ) as progress:
        task = progress.add_task(f"downloading {escape(name)}", total=None)
        try:
            folder = download(
                name,
                home,
                url=url,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        except VitrinaError as exc:
            raise _fail(exc) from None
    err.print(f"{name}: verified and unpacked into {folder}", markup=False)


@datasets_app.command("synth")
def datasets_synth(
    events: Annotated[int, typer.Option(help="number of events")],
    users: Annotated[int, typer.Option(help="number of users")],
    items: Annotated[int, typer.Option(help="number of items")],
    output: Annotated[Path, typer.Option(help="FILE.parquet; the catalogue goes to FILE.items.parquet")],
    seed: Annotated[int, typer.Option(help="same seed, same file")] = 0,
    categories: Annotated[int, typer.Option(help="item categories")] = 50,
    start: Annotated[str, typer.Option(help="first day of the date range (ISO)")] = "2024-01-01",
    days: Annotated[float, typer.Option(help="length of the date range in days")] = 365.0,
    repeat: Annotated[float, typer.Option(help="probability an event repeats a recent item")] = 0.0,
) -> None:
    """Generate a synthetic log: Zipf popularity, heavy-tailed users, drifting item-to-item
    transitions, categories and coordinates (docs/benchmarks.md, "Synthetic logs")."""
    from rich.progress import BarColumn, Progress

    from vitrina.data.synth import SynthConfig, write_synth

    cfg = SynthConfig(
        events=events,
        users=users,
        items=items,
        seed=seed,
        categories=categories,
        start=start,
        days=days,
        repeat=repeat,
    )
    with Progress("[progress.description]{task.description}", BarColumn(), console=err) as progress:
        task = progress.add_task("generating", total=events)
        try:
            log, catalog = write_synth(cfg, output, lambda done, _: progress.update(task, completed=done))
        except VitrinaError as exc:
            raise _fail(exc) from None
    err.print(f"wrote {events:,} events to {log} and the catalogue to {catalog}", markup=False)


def _benchmark_config(**kwargs: Any) -> Any:
    from vitrina.evaluation.config import load_config, make_config, parse_columns, parse_metrics, parse_models

    config_path = kwargs.pop("config")
    models = kwargs.pop("models")
    metrics = kwargs.pop("metrics")
    columns = kwargs.pop("columns")
    overrides = {k: v for k, v in kwargs.items() if v is not None}
    if metrics is not None:
        overrides["metrics"] = parse_metrics(metrics)
    if columns is not None:
        overrides["columns"] = parse_columns(columns)
    if models is not None:
        overrides["models"] = [m.model_dump() for m in parse_models(models)]
    if config_path is not None:
        return load_config(config_path, **overrides)
    overrides.setdefault("models", [])
    if "dataset" not in overrides:
        raise VitrinaError("give --dataset (a name or a file) or --config FILE.toml")
    return make_config(overrides, source="command line")


@app.command()
def benchmark(
    dataset: Annotated[
        str | None, typer.Option(help="dataset name (see `vitrina datasets list`) or file path")
    ] = None,
    models: Annotated[str | None, typer.Option(help="e.g. popular,itemknn,ease:l2=500,als")] = None,
    split: Annotated[
        str | None,
        typer.Option(
            help="loo (leave-one-out), temporal (one cutoff), ratio (each user's newest share) or "
            "rolling (time-based cross-validation: --windows of --last-days each)",
            show_default=_DEFAULT["split"],
        ),
    ] = None,
    k: Annotated[
        int | None, typer.Option(help="list length for all metrics", show_default=_DEFAULT["k"])
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            help="table and results.md columns, in order (results.json has all)",
            show_default=_DEFAULT["metrics"],
        ),
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(help="your CSV/TSV/Parquet column names, e.g. user=visitor,item=sku,timestamp=ts"),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="folder for results.json, results.md, pareto.png")
    ] = None,
    format: Annotated[
        str | None,
        typer.Option(
            help="for a file: movielens, s3rec, s3rec-ts, pairs, csv, tsv, parquet",
            show_default="from extension",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML file with the same keys; flags override it")
    ] = None,
    cutoff: Annotated[str | None, typer.Option(help="temporal: ISO date/time or Unix seconds")] = None,
    last_days: Annotated[
        float | None, typer.Option(help="temporal: test on the last N days; rolling: N days per window")
    ] = None,
    validation_days: Annotated[
        float | None,
        typer.Option(
            help="temporal, rolling: validation (early stopping) on the N days before each test period",
            show_default="last-days",
        ),
    ] = None,
    test_ratio: Annotated[
        float | None,
        typer.Option(
            help="ratio: each user's newest share of events tested", show_default=_DEFAULT["test_ratio"]
        ),
    ] = None,
    validation_ratio: Annotated[
        float | None,
        typer.Option(
            help="ratio: each user's share just before the tested events, for validation (early stopping)",
            show_default="test-ratio",
        ),
    ] = None,
    windows: Annotated[
        int | None,
        typer.Option(
            help="rolling: number of test windows, the last ending at the newest event",
            show_default=_DEFAULT["windows"],
        ),
    ] = None,
    step_days: Annotated[
        float | None,
        typer.Option(help="rolling: days between window starts", show_default="last-days (back to back)"),
    ] = None,
    train_days: Annotated[
        float | None,
        typer.Option(
            help="rolling: train on only the N days before each window", show_default="all earlier events"
        ),
    ] = None,
    filter_cold_items: Annotated[
        bool | None,
        typer.Option(
            help="temporal, rolling: drop test events of items not seen before the test period",
            show_default="on",
        ),
    ] = None,
    filter_seen: Annotated[
        bool | None,
        typer.Option(
            help="temporal, rolling, ratio: drop test (user, item) pairs seen before the test period",
            show_default="on",
        ),
    ] = None,
    validation_users: Annotated[
        str | None,
        typer.Option(
            help="loo: validate on N random users (the rest train on it) or 'all'",
            show_default=_DEFAULT["validation_users"],
        ),
    ] = None,
    implicit_threshold: Annotated[float | None, typer.Option(help="keep events with weight >= this")] = None,
    min_user: Annotated[int | None, typer.Option(help="k-core: min events per user")] = None,
    min_item: Annotated[int | None, typer.Option(help="k-core: min events per item")] = None,
    seed: Annotated[
        int | None, typer.Option(help="seed for every model that takes one", show_default=_DEFAULT["seed"])
    ] = None,
    mlflow_uri: Annotated[
        str | None,
        typer.Option(help="log each run to MLflow here, e.g. sqlite:///mlflow.db (needs vitrina[tracking])"),
    ] = None,
    eval_users: Annotated[
        int | None,
        typer.Option(help="evaluate N random test users (seeded), with 95% intervals", show_default="all"),
    ] = None,
) -> None:
    """Fit models on a split and rank the full catalogue; print a table and write the results.

    A TOML --config takes the same keys (`vitrina benchmark --help`; example: examples/bench.toml)."""
    from vitrina.evaluation.benchmark import run_benchmark

    try:
        cfg = _benchmark_config(
            dataset=dataset,
            models=models,
            split=split,
            k=k,
            metrics=metrics,
            columns=columns,
            output=output,
            format=format,
            config=config,
            cutoff=cutoff,
            last_days=last_days,
            validation_days=validation_days,
            test_ratio=test_ratio,
            validation_ratio=validation_ratio,
            windows=windows,
            step_days=step_days,
            train_days=train_days,
            filter_cold_items=filter_cold_items,
            filter_seen=filter_seen,
            validation_users=validation_users,
            implicit_threshold=implicit_threshold,
            min_user=min_user,
            min_item=min_item,
            seed=seed,
            eval_users=eval_users,
        )
        if mlflow_uri is not None:
            from vitrina.evaluation.tracking import _mlflow

            _mlflow(mlflow_uri, "vitrina-benchmark")  # a missing MLflow fails before the long run
        results = run_benchmark(cfg, console=err)
        if mlflow_uri is not None:
            from vitrina.evaluation.tracking import log_benchmark

            ids = log_benchmark(results, mlflow_uri, cfg.output)
            err.print(f"logged {len(ids)} run(s) to MLflow at {mlflow_uri}")
    except VitrinaError as exc:
        raise _fail(exc) from None


@app.command()
def train(
    dataset: Annotated[str, typer.Option(help="dataset name or file path")],
    model: Annotated[str, typer.Option(help="one model spec, e.g. ease:l2=500 or esasrec:epochs=50")],
    output: Annotated[Path, typer.Option(help="model directory to write (servable with `vitrina serve`)")],
    format: Annotated[
        str | None, typer.Option(help="for a file: movielens, s3rec, s3rec-ts, pairs, csv, tsv, parquet")
    ] = None,
    implicit_threshold: Annotated[float | None, typer.Option(help="keep events with weight >= this")] = None,
    seed: Annotated[int, typer.Option(help="seed for models that take one")] = 0,
    columns: Annotated[
        str | None,
        typer.Option(help="your CSV/TSV/Parquet column names, e.g. user=visitor,item=sku,timestamp=ts"),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="sequential models: continue from OUTPUT/checkpoint.pt, saved every epoch")
    ] = False,
    validate: Annotated[
        bool,
        typer.Option(
            help="models without early stopping: first fit a copy without the validation sample and "
            "score it, for the lineage (doubles the fit time)"
        ),
    ] = True,
) -> None:
    """Fit one model on all events of a dataset and save it (early stopping on the latest event of
    2,048 random users, the rest trained on). The bundle records its lineage: the data file's
    sha256 and size, the save time, the vitrina version and the validation scores on the latest
    event of those 2,048 users (other models: of a copy fitted without them, unless
    --no-validate). Under torchrun, sequential models train data-parallel and rank 0 saves."""
    from vitrina.evaluation.benchmark import check_time, load_data
    from vitrina.evaluation.config import make_config, parse_columns, parse_models
    from vitrina.evaluation.training import data_lineage, fit_on_all, validation_lineage
    from vitrina.models.registry import make_model
    from vitrina.models.sequential.ddp import DistContext, init_from_env

    try:
        if output.exists() and not output.is_dir():
            raise ConfigError(f"--output {output}: exists and is not a folder; choose a folder path")
        runs = parse_models(model)
        if len(runs) != 1:
            raise VitrinaError(f"--model: give exactly one model, got {len(runs)}")
        cfg = make_config(
            {
                "dataset": dataset,
                "format": format,
                "implicit_threshold": implicit_threshold,
                "models": [runs[0].model_dump()],
                "seed": seed,
                "columns": None if columns is None else parse_columns(columns),
            }
        )
        params = dict(runs[0].params)
        check_time(cfg, [(runs[0].name, make_model(runs[0].name, params))])
        df, source, _ = load_data(cfg)
        accepted = make_model(runs[0].name, params).get_params()
        if "seed" in accepted:
            params.setdefault("seed", seed)
        if "checkpoint" in accepted:
            params.setdefault("checkpoint", str(output / "checkpoint.pt"))
            params["resume"] = resume
        elif resume:
            raise VitrinaError(f"--resume: {runs[0].name} has no training checkpoints (sequential models do)")
        init_from_env()  # joins torchrun's process group, if launched by torchrun
        model_obj = make_model(runs[0].name, params)
        if model_obj.uses_validation:  # the trainer shows its own epoch bar
            fitted = fit_on_all(model_obj, df, seed=seed)
        else:
            with err.status(f"fitting {runs[0].name} on {df.height:,} events"):
                fitted = fit_on_all(model_obj, df, seed=seed)
        if not DistContext.current().is_main:
            return
        with err.status(f"scoring {runs[0].name} on the validation sample"):
            validation = validation_lineage(fitted, df, seed=seed, score_baselines=validate)
        fitted.save(output, name=runs[0].name, lineage=data_lineage(dataset, source, df) | validation)
        if "checkpoint" in accepted:  # the model is saved: the training state is no longer needed
            for path in (Path(params["checkpoint"]), Path(params["checkpoint"] + ".refit")):
                path.unlink(missing_ok=True)
    except VitrinaError as exc:
        raise _fail(exc) from None
    scores = validation["validation"]
    if scores is None:
        err.print(f"validation: none ({validation['validation_note']})", markup=False)
    else:
        metrics = scores["metrics"]
        shown = " ".join(f"{m}={metrics[m]:.4f}" for m in ("ndcg@10", "hr@10", "recall@10") if m in metrics)
        err.print(f"validation ({scores['users']:,} users' latest event): {shown}", markup=False)
    err.print(f"saved {runs[0].name} to {output}", markup=False)


@app.command()
def recommend(
    model_dir: Annotated[Path, typer.Argument(help="model directory written by `vitrina train`")],
    users: Annotated[str, typer.Option(help="'all' or a file of user ids: Parquet, or text one per line")],
    output: Annotated[Path, typer.Option(help="Parquet file to write: user_id, item_id, score, rank")],
    k: Annotated[int, typer.Option(min=1, help="items per user")] = 10,
    exclude_seen: Annotated[bool, typer.Option(help="leave out items the user has seen")] = True,
    allow_items: Annotated[Path | None, typer.Option(help="file of the only item ids allowed")] = None,
    deny_items: Annotated[Path | None, typer.Option(help="file of item ids never recommended")] = None,
    skip_unknown: Annotated[bool, typer.Option(help="skip user ids the model has not seen")] = False,
    chunk_users: Annotated[int, typer.Option(min=1, help="users per chunk (bounds memory)")] = 4096,
    ray: Annotated[
        str | None, typer.Option(help="score on a Ray cluster at this address (e.g. 10.0.0.1:6379 or 'auto')")
    ] = None,
) -> None:
    """Top-k for many users into one Parquet file, streamed in chunks (filters as in Python's
    Recommender.recommend); on a Ray cluster with --ray."""
    from rich.progress import Progress

    from vitrina.data.columns import ITEM, USER
    from vitrina.serving.batch import BatchOptions, read_ids, recommend_to_parquet

    try:
        opts = BatchOptions(
            k=k,
            exclude_seen=exclude_seen,
            allow_items=None if allow_items is None else read_ids(allow_items, ITEM).to_list(),
            deny_items=None if deny_items is None else read_ids(deny_items, ITEM).to_list(),
            chunk_users=chunk_users,
        )
        ids = None if users == "all" else read_ids(Path(users), USER)
        with Progress(*Progress.get_default_columns(), console=err, disable=not err.is_terminal) as bar:
            task = bar.add_task("scoring users", total=None)
            n = recommend_to_parquet(
                model_dir,
                output,
                opts,
                users=ids,
                users_source=users,
                skip_unknown=skip_unknown,
                ray_address=ray,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except VitrinaError as exc:
        raise _fail(exc) from None
    err.print(f"{n} users: top-{k} written to {output}", markup=False)


# --- vitrina tune (issue 15) ----------------------------------------------------------------
@app.command()
def tune(
    dataset: Annotated[str, typer.Option(help="dataset name or file path")],
    model: Annotated[
        str, typer.Option(help="model to tune; params given here stay fixed, e.g. esasrec:epochs=30")
    ],
    trials: Annotated[int, typer.Option(min=1, help="number of trials")] = 20,
    timeout: Annotated[
        float | None, typer.Option(help="stop starting trials after this many seconds")
    ] = None,
    output: Annotated[
        Path, typer.Option(help="folder for study.json, best.toml, report.md, history.png")
    ] = Path("tune"),
    split: Annotated[
        str, typer.Option(help="loo, temporal (needs --last-days) or ratio (each user's newest 20%)")
    ] = "loo",
    last_days: Annotated[float | None, typer.Option(help="temporal: test on the last N days")] = None,
    validation_days: Annotated[float | None, typer.Option(help="temporal: validation days")] = None,
    validation_users: Annotated[
        str, typer.Option(help="loo: score trials on N random users' second-to-last event, or 'all'")
    ] = str(DEFAULTS["validation_users"]),
    k: Annotated[int, typer.Option(min=1, help="list length of the validation NDCG (baselines)")] = 10,
    format: Annotated[str | None, typer.Option(help="for a file", show_default="from extension")] = None,
    columns: Annotated[str | None, typer.Option(help="e.g. user=visitor,item=sku,timestamp=ts")] = None,
    seed: Annotated[int, typer.Option(help="seed of the sampler, the split sample and the models")] = 0,
    mlflow_uri: Annotated[
        str | None, typer.Option(help="log every trial to MLflow, e.g. sqlite:///mlflow.db")
    ] = None,
) -> None:
    """Search a model's hyper-parameters with Optuna (TPE; bad epoch-trained trials pruned by
    their validation score). Trials are scored on validation only; the test part is never read.
    Then: `vitrina benchmark --config OUTPUT/best.toml --dataset ...` for the test score."""
    from rich.table import Table

    from vitrina.evaluation.benchmark import load_data, make_split
    from vitrina.evaluation.config import make_config, parse_columns, parse_models
    from vitrina.evaluation.tuning import tune_on_split
    from vitrina.models.registry import make_model

    try:
        runs = parse_models(model)
        if len(runs) != 1:
            raise VitrinaError(f"--model: give exactly one model, got {len(runs)}")
        cfg = make_config(
            {
                "dataset": dataset,
                "format": format,
                "columns": None if columns is None else parse_columns(columns),
                "split": split,
                "last_days": last_days,
                "validation_days": validation_days,
                "validation_users": validation_users,
                "models": [runs[0].model_dump()],
                "k": k,
                "seed": seed,
            },
            source="command line",
        )
        built = make_model(runs[0].name, runs[0].params).get_params()
        fixed = {key: built[key] for key in runs[0].params}  # typed, as the model received them
        logger = None
        if mlflow_uri is not None:
            from vitrina.evaluation.tracking import tune_logger

            logger = tune_logger(mlflow_uri, runs[0].name)
        with err.status(f"loading {dataset}"):
            df, _, _ = load_data(cfg)
            data_split = make_split(cfg, df)

        def progress(rec: dict[str, Any]) -> None:
            value = "" if rec["value"] is None else f" val_ndcg={rec['value']:.4f}"
            err.print(f"trial {rec['number']}: {rec['state']}{value} {rec['params']}", markup=False)
            if logger is not None:
                logger(rec)

        result = tune_on_split(
            runs[0].name,
            data_split,
            n_trials=trials,
            fixed=fixed,
            k=k,
            seed=seed,
            timeout=timeout,
            output=output,
            on_trial=progress,
        )
        if mlflow_uri is not None:
            from vitrina.evaluation.tracking import log_study_files

            log_study_files(mlflow_uri, runs[0].name, result.files, result.best_params, result.best_value)
    except VitrinaError as exc:
        raise _fail(exc) from None
    table = Table(title=f"{runs[0].name}: best {result.metric} = {result.best_value:.4f} (validation)")
    table.add_column("parameter")
    table.add_column("value", justify="right")
    for key, value in result.best_params.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    err.print(table)
    pruned = sum(t["state"] == "pruned" for t in result.trials)
    err.print(
        f"{len(result.trials)} trials ({pruned} pruned); "
        f"wrote {output}/study.json, best.toml, report.md, history.png"
    )


# --- end vitrina tune ---------------------------------------------------------------------------


# --- vitrina catalog (issue 15) -------------------------------------------------------------
catalog_app = typer.Typer(help="Item catalogues for the service's filters.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("build")
def catalog_build(
    source: Annotated[
        Path, typer.Argument(help="MovieLens u.item, S3-Rec *_item2attributes.json, or CSV/TSV/Parquet")
    ],
    output: Annotated[
        Path, typer.Option(help="catalogue to write (.parquet or .csv), for `vitrina serve --catalog`")
    ],
    kind: Annotated[
        str | None, typer.Option(help="movielens, s3rec or table", show_default="from the file name")
    ] = None,
    columns: Annotated[
        str | None, typer.Option(help="table: catalogue name=your column, e.g. item_id=sku,category=dept")
    ] = None,
) -> None:
    """Write item_id, available, category (and lat, lon, value, segments from a table) for serving."""
    from vitrina.data.catalogs import build_catalog
    from vitrina.serving.catalog import Catalog

    try:
        mapping = (
            None if columns is None else dict(t.strip().split("=", 1) for t in columns.split(",") if "=" in t)
        )
        table = build_catalog(source, kind, mapping)
        output.parent.mkdir(parents=True, exist_ok=True)
        table.write_csv(output) if output.suffix == ".csv" else table.write_parquet(output)
        Catalog.read(output)  # what the service will read: refuse to write one it would reject
    except VitrinaError as exc:
        raise _fail(exc) from None
    n_cat = table["category"].n_unique() if "category" in table.columns else 0
    err.print(f"catalogue: {table.height:,} items, {n_cat} categories -> {output}")


# --- end vitrina catalog ------------------------------------------------------------------------


@app.command("models")
def models_list() -> None:
    """Registered models and every parameter's default (from the constructors, so never stale).

    The sequential models' constructor defaults (epochs, patience, lr, batch_size, max_len, ...) are
    listed once, below the table; each sequential row shows what its configuration sets."""
    from rich.table import Table

    from vitrina.models.registry import MODELS, constructor_defaults, model_defaults

    def fmt(params: dict[str, Any]) -> str:
        return ", ".join(f"{k}={v}" for k, v in params.items())

    sequential = [n for n, spec in MODELS.items() if spec.target.endswith(":SequentialTransformer")]
    shared: dict[str, Any] = {}
    if sequential:
        # the constructor's value of every parameter some configuration leaves to it
        set_by_all = set.intersection(*(set(MODELS[n].defaults) for n in sequential))
        own = constructor_defaults(MODELS[sequential[0]].load_class())
        shared = {k: v for k, v in own.items() if k not in set_by_all}
    table = Table(title="vitrina models (use as --models name:param=value)")
    for col in ("name", "description", "defaults"):
        table.add_column(col, overflow="fold")
    for name, spec in MODELS.items():
        params = spec.defaults if name in sequential else model_defaults(name)
        table.add_row(name, spec.description, fmt(params) or "(no parameters)")
    out = Console()
    out.print(table)
    if shared:
        names = ", ".join(sequential)
        out.print(
            f"[bold]every sequential model ({names}), where its row does not set it:[/bold] {fmt(shared)}"
        )


def main() -> None:  # pragma: no cover - console entry point wrapper
    sys.exit(app())


if __name__ == "__main__":
    app()
