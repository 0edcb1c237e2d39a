"""Benchmark configuration: one frozen object, from CLI flags or a TOML file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vitrina.data.columns import ITEM, TIMESTAMP, USER, WEIGHT
from vitrina.errors import ConfigError
from vitrina.evaluation.defaults import DEFAULTS, METRIC_NAMES


class ModelRun(BaseModel):
    """One ``[[models]]`` table: a registered model and parameters overriding its defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="registered model name (`vitrina models`)")
    params: dict[str, Any] = Field(default_factory=dict, description="overrides of the model's defaults")


DEFAULT_COLUMNS: tuple[str, ...] = DEFAULTS["metrics"]  # type: ignore[assignment]
COLUMN_KEYS = {"user": USER, "item": ITEM, "timestamp": TIMESTAMP, "weight": WEIGHT}


# split-specific keys with no default: each may only be given with the splits named
_SPLIT_KEYS = {
    "cutoff": ("temporal",),
    "last_days": ("temporal", "rolling"),
    "validation_days": ("temporal", "rolling"),
    "test_ratio": ("ratio",),
    "validation_ratio": ("ratio",),
    "windows": ("rolling",),
    "step_days": ("rolling",),
    "train_days": ("rolling",),
}


def _field(default: Any = None, description: str = "", **kw: Any) -> Any:
    return Field(default, description=description, **kw)


class BenchmarkConfig(BaseModel):
    """What to run: the keys of a ``bench.toml`` and of ``vitrina benchmark``'s flags."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = Field(description="registered name (`vitrina datasets list`) or a file path")
    format: Literal["movielens", "s3rec", "s3rec-ts", "pairs", "csv", "tsv", "parquet"] | None = _field(
        None, "file format; inferred from .csv/.tsv/.tab/.parquet when not given"
    )
    columns: dict[str, str] | None = _field(
        None, "CSV/TSV/Parquet: your column names, e.g. {user = 'visitor', item = 'sku', timestamp = 'ts'}"
    )
    split: Literal["loo", "temporal", "ratio", "rolling"] = _field(
        DEFAULTS["split"],
        "loo (leave-one-out), temporal (one global cutoff), ratio (each user's newest share) or rolling "
        "(time-based cross-validation: several temporal splits moving forward)",
    )
    cutoff: str | None = _field(None, "temporal: ISO date/time or Unix seconds where test starts")
    last_days: float | None = _field(
        None, "temporal: the test period is the last N days; rolling: each window tests on N days", gt=0
    )
    validation_days: float | None = _field(
        None,
        "temporal, rolling: validation (early stopping) period cut from the end of each train part; "
        "default last_days",
        gt=0,
    )
    filter_cold_items: bool = _field(
        True, "temporal, rolling: drop test events of items not seen before the test period"
    )
    filter_seen: bool = _field(
        True,
        "temporal, rolling, ratio: drop test (user, item) pairs already seen before the test period",
    )
    test_ratio: float | None = _field(
        None,
        f"ratio: each user's newest share of events tested (default {DEFAULTS['test_ratio']})",
        gt=0,
        lt=1,
    )
    validation_ratio: float | None = _field(
        None,
        "ratio: each user's share of events before the test ones held out for validation (early "
        "stopping); default test_ratio",
        gt=0,
        lt=1,
    )
    windows: int | None = _field(
        None, f"rolling: number of test windows, oldest first (default {DEFAULTS['windows']})", ge=1, le=100
    )
    step_days: float | None = _field(
        None,
        "rolling: days between the starts of consecutive windows; default last_days (back to back)",
        gt=0,
    )
    train_days: float | None = _field(
        None,
        "rolling: train on only the N days before each window (sliding); all earlier events if not set",
        gt=0,
    )
    validation_users: Annotated[int, Field(ge=1)] | Literal["all"] = _field(
        DEFAULTS["validation_users"],
        "loo: validate (early stopping) on N random users, the others train on their second-to-last "
        "event; 'all' holds out every user's",
    )
    implicit_threshold: float | None = _field(None, "keep events with weight >= this (all if not set)")
    min_user: int | None = _field(None, "k-core before splitting: min events per user")
    min_item: int | None = _field(None, "k-core before splitting: min events per item")
    models: list[ModelRun] = Field(
        default_factory=list,
        description="[[models]] tables with name and params; may be empty when run_benchmark gets instances",
    )
    k: int = _field(DEFAULTS["k"], "list length of every metric", ge=1, le=1000)
    metrics: tuple[Literal[METRIC_NAMES], ...] = _field(  # type: ignore[valid-type]
        DEFAULT_COLUMNS, "columns of the console table and results.md, in order (results.json has all)"
    )
    seed: int = _field(DEFAULTS["seed"], "seed of the split sample and of every model that takes one")
    output: Path | None = _field(None, "folder for results.json, results.md, pareto.png")
    eval_users: int | None = _field(
        None,
        "evaluate a random sample of N test users (seeded by seed), each metric with a 95% confidence "
        "interval; all test users if not set",
        ge=1,
    )

    @model_validator(mode="after")
    def _check(self) -> BenchmarkConfig:
        if self.split == "temporal" and (self.cutoff is None) == (self.last_days is None):
            raise ValueError("temporal split: give exactly one of cutoff or last_days")
        if self.split == "rolling" and self.last_days is None:
            raise ValueError("rolling split: give last_days, the length of each test window in days")
        misplaced = [
            key
            for key, splits in _SPLIT_KEYS.items()
            if getattr(self, key) is not None and self.split not in splits
        ]
        if misplaced:
            raise ValueError(
                f"{', '.join(misplaced)}: not used by split {self.split!r} (only by "
                f"{' / '.join(_SPLIT_KEYS[misplaced[0]])}); remove or change the split"
            )
        if self.split == "ratio":
            test, val = self.ratios()
            if test + val >= 1:
                raise ValueError(
                    f"ratio split: test_ratio + validation_ratio must be < 1, got {test} + {val}"
                )
        if self.columns is not None:
            unknown = sorted(set(self.columns) - set(COLUMN_KEYS) - set(COLUMN_KEYS.values()))
            if unknown:
                raise ValueError(f"columns: unknown key(s) {unknown}; use user, item, timestamp, weight")
        return self

    def ratios(self) -> tuple[float, float]:
        """The ratio split's test and validation shares, defaults filled in."""
        test = self.test_ratio if self.test_ratio is not None else float(DEFAULTS["test_ratio"])  # type: ignore[arg-type]
        return test, self.validation_ratio if self.validation_ratio is not None else test

    def column_mapping(self) -> dict[str, str] | None:
        """``columns`` with vitrina's names as keys (``user`` -> ``user_id``)."""
        if self.columns is None:
            return None
        return {COLUMN_KEYS.get(k, k): v for k, v in self.columns.items()}


def parse_columns(spec: str) -> dict[str, str]:
    """``"user=visitor,item=sku,timestamp=ts"`` -> ``{"user": "visitor", ...}``."""
    out = {}
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        key, eq, value = token.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ConfigError(f"--columns: expected ours=yours pairs like user=visitor, got {token!r}")
        out[key.strip()] = value.strip()
    return out


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
        raw = tomllib.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a TOML text file (invalid UTF-8 at byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: cannot read TOML ({exc})") from exc
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return make_config(raw, source=str(path))


def make_config(raw: dict[str, Any], source: str = "config") -> BenchmarkConfig:
    try:
        return BenchmarkConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None
