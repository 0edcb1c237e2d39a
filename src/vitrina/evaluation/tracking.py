"""Optional MLflow logging of benchmark and tuning runs (``--mlflow-uri``).

MLflow is an optional dependency (``pip install 'vitrina[tracking]'``, the light
``mlflow-skinny``). Any tracking URI works: a server, ``sqlite:///mlflow.db`` (a local file),
``databricks``. Metric names use ``_at_`` for ``@`` (``ndcg_at_10``), which MLflow does not allow.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vitrina.errors import ConfigError


def _mlflow(uri: str, experiment: str) -> Any:
    try:
        import mlflow
    except ImportError:
        raise ConfigError(
            "--mlflow-uri needs MLflow: pip install 'vitrina[tracking]' (or mlflow-skinny)"
        ) from None
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    return mlflow


def _metric_name(name: str) -> str:
    return name.replace("@", "_at_")


def _params(params: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in params.items()}


def log_benchmark(results: dict[str, Any], uri: str, output: Path | None = None) -> list[str]:
    """One MLflow run per benchmarked model (experiment ``vitrina-benchmark``): its parameters, the
    dataset/split/k/seed, every metric (rolling windows: the mean, and the sd as ``ndcg_at_10_sd``)
    and the fit/recommend seconds; ``results.json``,
    ``results.md`` and ``pareto.png`` as artifacts when ``output`` holds them. Returns the run ids."""
    mlflow = _mlflow(uri, "vitrina-benchmark")
    shared = {f"benchmark.{k}": results[k] for k in ("dataset", "split", "k", "seed") if k in results}
    ids = []
    for run in results["runs"]:
        with mlflow.start_run(run_name=f"{results['dataset']}/{run['model']}") as active:
            mlflow.log_params(_params({**shared, "model": run["model"], **run["params"]}))
            numbers = {
                **run["metrics"],
                **{f"{k}_sd": v for k, v in run.get("metrics_sd", {}).items() if v is not None},
                "fit_seconds": run["fit_seconds"],
                "recommend_seconds": run["recommend_seconds"],
            }
            mlflow.log_metrics({_metric_name(k): float(v) for k, v in numbers.items() if v == v})  # no NaN
            if output is not None:
                for name in ("results.json", "results.md", "pareto.png"):
                    if (output / name).is_file():
                        mlflow.log_artifact(str(output / name))
            ids.append(active.info.run_id)
    return ids


def tune_logger(uri: str, model: str) -> Callable[[dict[str, Any]], None]:
    """A per-trial callback for :func:`~vitrina.evaluation.tuning.tune_on_split`: one MLflow run
    per trial (experiment ``vitrina-tune-<model>``) with its parameters, state and score."""
    mlflow = _mlflow(uri, f"vitrina-tune-{model}")

    def log(record: dict[str, Any]) -> None:
        with mlflow.start_run(run_name=f"{model}/trial-{record['number']}"):
            mlflow.log_params(_params(record["params"]))
            mlflow.set_tag("state", record["state"])
            if record["value"] is not None:
                mlflow.log_metric("val_ndcg", float(record["value"]))

    return log


def log_study_files(uri: str, model: str, files: list[Path], best: dict[str, Any], value: float) -> str:
    """A summary run for the study: the best parameters and score, and the study's files."""
    mlflow = _mlflow(uri, f"vitrina-tune-{model}")
    with mlflow.start_run(run_name=f"{model}/best") as active:
        mlflow.log_params(_params(best))
        mlflow.log_metric("best_val_ndcg", value)
        for f in files:
            mlflow.log_artifact(str(f))
        return str(active.info.run_id)
