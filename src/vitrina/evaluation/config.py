"""Benchmark configuration: one frozen object, from CLI flags or a TOML file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vitrina.errors import ConfigError


class ModelRun(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


METRIC_NAMES = (
    "ndcg",
    "hr",
    "recall",
    "precision",
    "mrr",
    "map",
    "coverage",
    "novelty",
    "arp",
    "ild",
    "serendipity",
)
DEFAULT_COLUMNS = ("ndcg", "hr", "recall", "mrr", "coverage")


class BenchmarkConfig(BaseModel):
    """What to run. ``dataset`` is a registered name or a file path (then ``format`` is required)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str
    format: Literal["movielens", "s3rec", "s3rec-ts", "pairs", "csv", "tsv", "parquet"] | None = None
    split: Literal["loo", "temporal"] = "loo"
    cutoff: str | None = None  # temporal: ISO date/time or Unix seconds
    last_days: float | None = None  # temporal: the test period is the last N days
    validation_days: float | None = None  # temporal: validation period cut from the end of train
    # loo: validate (early stopping) on this many random users; the others train on their
    # second-to-last event. "all" holds out every user's second-to-last event.
    validation_users: Annotated[int, Field(ge=1)] | Literal["all"] = 2048
    implicit_threshold: float | None = None  # keep events with weight >= threshold; all if None
    min_user: int | None = None  # k-core before splitting
    min_item: int | None = None
    # may be empty when model instances are passed to run_benchmark
    models: list[ModelRun] = Field(default_factory=list)
    k: int = Field(10, ge=1, le=1000)
    # columns of the console table and results.md, in this order; results.json keeps every metric
    metrics: tuple[Literal[METRIC_NAMES], ...] = DEFAULT_COLUMNS  # type: ignore[valid-type]
    seed: int = 0
    output: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> BenchmarkConfig:
        if self.split == "temporal" and (self.cutoff is None) == (self.last_days is None):
            raise ValueError("temporal split: give exactly one of cutoff or last_days")
        return self


def parse_metrics(spec: str) -> tuple[str, ...]:
    """``"ndcg,hr,coverage"`` -> ``("ndcg", "hr", "coverage")``; an ``@k`` suffix is allowed and dropped."""
    names = tuple(t.strip().partition("@")[0].lower() for t in spec.split(",") if t.strip())
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown or not names:
        raise ConfigError(
            f"--metrics: unknown metric {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {', '.join(METRIC_NAMES)}"
        )
    return names


def parse_models(spec: str) -> list[ModelRun]:
    """``"popular,ease:l2=500,esasrec:n_factors=64,n_blocks=1"`` -> runs.

    A comma-separated token with ``=`` and no ``:`` continues the previous model's parameters.
    """
    runs: list[tuple[str, dict[str, str]]] = []
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        if ":" in token:
            name, _, first = token.partition(":")
            runs.append((name.strip(), {}))
            token = first
        elif "=" not in token:
            runs.append((token, {}))
            continue
        if "=" not in token:
            raise ConfigError(f"--models: expected key=value after ':', got {token!r}")
        if not runs:
            raise ConfigError(f"--models: parameter {token!r} comes before any model name")
        key, _, value = token.partition("=")
        runs[-1][1][key.strip()] = value.strip()
    return [ModelRun(name=n, params=p) for n, p in runs]


def load_config(path: Path, **overrides: Any) -> BenchmarkConfig:
    """Read a TOML config (top-level keys as in :class:`BenchmarkConfig`, ``[[models]]`` tables)."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read TOML ({exc})") from exc
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return make_config(raw, source=str(path))


def make_config(raw: dict[str, Any], source: str = "config") -> BenchmarkConfig:
    try:
        return BenchmarkConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None
