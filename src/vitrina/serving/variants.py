"""Experiments config: which experiments run, and which model bundle each variant serves.

A JSON or TOML file::

    n_buckets = 10000
    holdout = 0.0

    [[experiments]]
    name = "ranker"
    layer = "home"
    traffic = 1.0
    salt = "ranker-2024-06"
    variants = { control = 0.5, ease = 0.5 }
    models = { ease = "models/ease" }   # variant -> model dir; others serve the default model

Relative model paths are resolved against the config file's folder. Assignment is delegated to
``vitrina.experiments.assignment`` (imported when a config is given).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vitrina.errors import ConfigError


class Assigner(Protocol):
    def assign(self, unit_id: str) -> dict[str, str]:
        """Experiment name -> variant for every experiment the unit is in."""
        ...


@dataclass(frozen=True)
class ExperimentPlan:
    """The assigner plus ``experiment -> variant -> model dir`` (experiments in config order)."""

    assigner: Assigner
    models: dict[str, dict[str, Path]]


def read_plan(path: str | Path) -> ExperimentPlan:
    """Parse an experiments config and build the assigner from ``vitrina.experiments.assignment``."""
    path = Path(path)
    try:
        text = path.read_text()
        raw: dict[str, Any] = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"experiments config {path}: unreadable ({exc}); expected JSON or TOML") from exc
    try:
        from vitrina.experiments.assignment import Assigner as _Assigner
        from vitrina.experiments.assignment import Experiment
    except ImportError as exc:
        raise ConfigError(
            f"experiments config {path}: vitrina.experiments.assignment is unavailable ({exc})"
        ) from exc
    experiments, models = [], {}
    for spec in raw.get("experiments", []):
        spec = dict(spec)
        variant_models = spec.pop("models", {}) or {}
        try:
            exp = Experiment(**spec)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"experiments config {path}, experiment {spec.get('name')!r}: {exc}") from exc
        unknown = set(variant_models) - set(spec.get("variants", {}))
        if unknown:
            raise ConfigError(
                f"experiments config {path}: models for unknown variants {sorted(unknown)} of {exp.name!r}"
            )
        experiments.append(exp)
        models[spec["name"]] = {v: (path.parent / d).resolve() for v, d in variant_models.items()}
    assigner = _Assigner(
        experiments, n_buckets=int(raw.get("n_buckets", 10_000)), holdout=float(raw.get("holdout", 0.0))
    )
    return ExperimentPlan(assigner, models)
