"""Hyper-parameter search on validation data only (``vitrina tune``), with Optuna.

TPE proposes parameters from each model's search space (:data:`SPACES`); models that train in
epochs report their validation NDCG@10 after every epoch, and a median pruner stops trials that
fall behind. The objective never sees the test part: :func:`tune_on_split` fits on
``split.train`` and scores ``split.validation`` (baselines: NDCG@k of a full-catalogue ranking of
the validation users; early-stopping models: their best validation NDCG@10). Optuna is an
optional dependency (``pip install 'vitrina[tune]'``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from vitrina.data.splits import Split
from vitrina.errors import ConfigError
from vitrina.evaluation.api import evaluate_model
from vitrina.models.registry import MODELS, make_model

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Param:
    """One dimension of a search space."""

    kind: Literal["float", "int", "categorical"]
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(name, list(self.choices))


_SEQUENTIAL = {
    "n_factors": Param("categorical", choices=(32, 64, 128)),
    "n_blocks": Param("int", 1, 3),
    "dropout": Param("float", 0.0, 0.5),
    "lr": Param("float", 1e-4, 1e-2, log=True),
    "max_len": Param("categorical", choices=(50, 100, 200)),
}
SPACES: dict[str, dict[str, Param]] = {
    "popular": {"days": Param("categorical", choices=(None, 7.0, 30.0, 90.0, 365.0))},
    "itemknn": {
        "k_neighbors": Param("int", 10, 1000, log=True),
        "shrinkage": Param("float", 0.0, 200.0),
        "weighted": Param("categorical", choices=(False, True)),
    },
    "ease": {"l2": Param("float", 1.0, 1e5, log=True)},
    "als": {
        "factors": Param("int", 16, 256, log=True),
        "regularization": Param("float", 1e-4, 10.0, log=True),
        "alpha": Param("float", 0.1, 100.0, log=True),
        "iterations": Param("int", 5, 50),
    },
    "bpr": {
        "factors": Param("int", 16, 256, log=True),
        "learning_rate": Param("float", 1e-3, 0.2, log=True),
        "regularization": Param("float", 1e-5, 0.1, log=True),
        "iterations": Param("int", 20, 300, log=True),
    },
    **{
        name: dict(_SEQUENTIAL)
        for name in (
            "sasrec",
            "sasrec-ss",
            "gsasrec",
            "bert4rec",
            "esasrec",
            "esasrec-full",
            "hstu",
            "hstu-large",
            "fuxi-alpha",
        )
    },
}


@dataclass
class TuneResult:
    """A finished study: every trial, the best parameters and where the files went."""

    model: str
    metric: str
    best_value: float
    best_params: dict[str, Any]
    trials: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError("vitrina tune needs Optuna: pip install 'vitrina[tune]' (or optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def tune_on_split(
    name: str,
    split: Split,
    *,
    n_trials: int,
    fixed: dict[str, Any] | None = None,
    k: int = 10,
    seed: int = 0,
    timeout: float | None = None,
    output: Path | None = None,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> TuneResult:
    """Search ``name``'s space (minus the ``fixed`` parameters) for ``n_trials`` trials and return
    the best validation score. ``split.test`` is never read. ``output`` receives ``study.json``,
    ``best.toml`` (a ``[[models]]`` table for ``vitrina benchmark --config``), ``report.md`` and
    ``history.png``. ``on_trial`` sees each finished trial's record (MLflow logging uses it).
    ``pruner`` defaults to a median pruner (3 trials and 3 epochs before it acts)."""
    optuna = _optuna()
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; available: {', '.join(sorted(MODELS))}")
    if split.validation.height == 0:
        raise ConfigError(
            "tune: the split has no validation part; the search needs one (never the test part)"
        )
    fixed = dict(fixed or {})
    space = {p: spec for p, spec in SPACES[name].items() if p not in fixed}
    if not space:
        raise ConfigError(f"tune: every parameter of {name}'s search space is fixed; nothing to search")
    make_model(name, fixed)  # a bad fixed parameter fails before the first trial
    # the tuning view of the split: train, and the validation events as the held-out part
    view = Split(split.train, split.train.clear(), split.validation)
    records: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        params = {**fixed, **{p: spec.suggest(trial, p) for p, spec in space.items()}}
        model = make_model(name, params)
        if "seed" in model.get_params() and "seed" not in params:
            model = make_model(name, {**params, "seed": seed})
        start = time.perf_counter()
        if model.uses_validation:

            def report(record: dict[str, float]) -> None:
                trial.report(float(record["val_ndcg_at_10"]), int(record["epoch"]))
                if trial.should_prune():
                    raise optuna.TrialPruned(f"epoch {record['epoch']}: behind the median")

            model.epoch_callback = report  # type: ignore[attr-defined]
            model.fit(split.train, validation=split.validation)
            value = float(model.training_summary_["best_val_ndcg_at_10"])  # type: ignore[attr-defined]
        else:
            value = float(evaluate_model(model, view, k=k)[f"ndcg@{k}"])
        trial.set_user_attr("fit_seconds", time.perf_counter() - start)
        return value

    def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        rec = {
            "number": trial.number,
            "state": trial.state.name.lower(),
            "value": trial.value,
            "params": {**fixed, **trial.params},
            "epochs_reported": len(trial.intermediate_values),
            "seconds": trial.duration.total_seconds() if trial.duration else None,
        }
        records.append(rec)
        if on_trial is not None:
            on_trial(rec)

    study = optuna.create_study(
        direction="maximize",
        # TPE draws its first trials at random; a fixed 10 would make any study of <= 10 trials a random
        # search, so a short study keeps a third of its trials (at least 3) for start-up.
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(3, n_trials // 3))),
        pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3),
        study_name=f"vitrina-{name}",
    )
    study.optimize(objective, n_trials=n_trials, timeout=timeout, callbacks=[record], catch=())
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not done:
        raise ConfigError(f"tune: no trial of {name} completed ({len(study.trials)} pruned or failed)")
    metric = "val_ndcg@10" if make_model(name, fixed).uses_validation else f"val_ndcg@{k}"
    result = TuneResult(name, metric, float(study.best_value), {**fixed, **study.best_params}, records)
    if output is not None:
        result.files = write_study(result, output)
    return result


def write_study(result: TuneResult, output: Path) -> list[Path]:
    """``study.json``, ``best.toml``, ``report.md`` and ``history.png`` under ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    study = output / "study.json"
    study.write_text(
        json.dumps(
            {
                "model": result.model,
                "metric": result.metric,
                "best_value": result.best_value,
                "best_params": result.best_params,
                "trials": result.trials,
                "note": "scores are on the validation part only; the test part was never read",
            },
            indent=2,
            default=str,
        )
    )
    best = output / "best.toml"
    params = ", ".join(f"{k} = {_toml(v)}" for k, v in result.best_params.items() if v is not None)
    best.write_text(
        f"# best of {len(result.trials)} trials, {result.metric} = {result.best_value:.4f} (validation)\n"
        f'[[models]]\nname = "{result.model}"\nparams = {{ {params} }}\n'
    )
    report = output / "report.md"
    report.write_text(_report(result))
    plot = output / "history.png"
    _plot(result, plot)
    return [study, best, report, plot]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _report(result: TuneResult) -> str:
    names = sorted({p for t in result.trials for p in t["params"]})
    lines = [
        f"# Tuning {result.model}: best {result.metric} = {result.best_value:.4f}",
        "",
        "Scores are on the validation part only; the test part was never read.",
        "",
        "| trial | state | " + " | ".join(names) + f" | {result.metric} | s |",
        "|---:|---|" + "---|" * len(names) + "---:|---:|",
    ]
    ranked = sorted(result.trials, key=lambda t: -(t["value"] if t["value"] is not None else float("-inf")))
    for t in ranked:
        cells = [_cell(t["params"].get(n)) for n in names]
        value = f"{t['value']:.4f}" if t["value"] is not None else ""
        seconds = f"{t['seconds']:.1f}" if t["seconds"] is not None else ""
        lines.append(f"| {t['number']} | {t['state']} | " + " | ".join(cells) + f" | {value} | {seconds} |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _plot(result: TuneResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    done = [t for t in result.trials if t["value"] is not None]
    ax.scatter([t["number"] for t in done], [t["value"] for t in done], label="trial", color="tab:blue")
    best, running = float("-inf"), []
    for t in done:
        best = max(best, t["value"])
        running.append(best)
    ax.plot([t["number"] for t in done], running, color="tab:orange", label="best so far")
    pruned = [t["number"] for t in result.trials if t["state"] == "pruned"]
    if pruned:
        ax.scatter(pruned, [min(running)] * len(pruned), marker="x", color="grey", label="pruned")
    ax.set_xlabel("trial")
    ax.set_ylabel(result.metric)
    ax.set_title(f"{result.model}: validation score by trial")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
