"""Event-log schema shared by serving (writes) and analysis (reads): column constants + validator.

One row per event::

    timestamp  float  Unix seconds
    unit_id    str    randomisation unit (user id by default)
    experiment str    experiment name (required on exposures; may be null on metric events)
    variant    str    variant name (may be null on metric events)
    event      str    "exposure" or a metric event ("click", "purchase", "revenue", ...)
    value      float  metric value (1.0 for counts)
    item_id    str    optional
    propensity float  optional, probability the logging policy gave the shown item (for OPE)
    request_id str    optional

Files are Parquet (``.parquet``) or JSON lines (``.jsonl`` / ``.ndjson``).

Metric events need not carry the experiment: as on real platforms (and in the service's own log,
where only exposures know the arm), :func:`attribute_events` credits an unlabelled metric event to
every experiment in which its unit was exposed *before* the event, with the unit's variant there.
A history (design) or pre-period (CUPED) log needs only ``timestamp``, ``unit_id``, ``event`` and
``value`` (:func:`validate_history`).

:func:`validate_events` refuses structural errors (missing columns, wrong types, non-finite numbers,
propensities outside (0, 1]); :func:`check_quality` *reports* content problems (missing variants, units
in two arms, duplicated events, negative values) with counts and example ids, so the caller decides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import polars as pl
from pydantic import BaseModel, ConfigDict

from vitrina.data.interactions import as_polars
from vitrina.errors import DataValidationError

__all__ = [
    "EVENT",
    "EXPERIMENT",
    "EXPOSURE",
    "HISTORY_REQUIRED",
    "ITEM_ID",
    "OPTIONAL",
    "POSITION",
    "PROPENSITY",
    "REQUEST_ID",
    "REQUIRED",
    "TIMESTAMP",
    "UNIT_ID",
    "VALUE",
    "VARIANT",
    "LogQuality",
    "QualityIssue",
    "attribute_events",
    "check_quality",
    "mixed_units",
    "read_events",
    "read_table",
    "validate_events",
    "validate_history",
]

TIMESTAMP: Final = "timestamp"
UNIT_ID: Final = "unit_id"
EXPERIMENT: Final = "experiment"
VARIANT: Final = "variant"
EVENT: Final = "event"
VALUE: Final = "value"
ITEM_ID: Final = "item_id"
PROPENSITY: Final = "propensity"
REQUEST_ID: Final = "request_id"
POSITION: Final = "position"  # 0-based slot of item_id in the list shown (exploration logs)
EXPOSURE: Final = "exposure"

REQUIRED: Final = (TIMESTAMP, UNIT_ID, EXPERIMENT, VARIANT, EVENT, VALUE)
OPTIONAL: Final = (ITEM_ID, PROPENSITY, REQUEST_ID, POSITION)
_STRING_COLS: Final = (UNIT_ID, EXPERIMENT, VARIANT, EVENT, ITEM_ID, REQUEST_ID)
_FLOAT_COLS: Final = (TIMESTAMP, VALUE, PROPENSITY, POSITION)
_N_EXAMPLES: Final = 5


def _cast(df: pl.DataFrame, name: str, dtype: type[pl.DataType], source: str) -> pl.DataFrame:
    col = df[name]
    cast = col.cast(dtype, strict=False)
    bad = cast.is_null() & col.is_not_null()
    if bad.any():
        row = int(bad.arg_true()[0]) + 1
        raise DataValidationError(
            f"{source}, row {row}, field '{name}': expected {dtype.__name__}, got {col.filter(bad)[0]!r}"
        )
    return df.with_columns(cast.alias(name))


def validate_events(df: pl.DataFrame, *, source: str = "events") -> pl.DataFrame:
    """Check columns and types of an event log; returns a normalised copy (never drops rows).

    Nulls in ``variant`` are allowed here (they are a content problem, see :func:`check_quality`);
    nulls elsewhere in required columns are refused.
    """
    df = as_polars(df, source)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{source}: missing column(s) {missing}; found {df.columns}. Required: {list(REQUIRED)}, "
            f"optional: {list(OPTIONAL)} (see vitrina.experiments.schema)"
        )
    for name in _STRING_COLS:
        if name in df.columns:
            df = _cast(df, name, pl.String, source)
    for name in _FLOAT_COLS:
        if name in df.columns:
            df = _cast(df, name, pl.Float64, source)
    for name in REQUIRED:
        if name == VARIANT:
            continue
        nulls = df[name].is_null()
        if name == EXPERIMENT:  # metric events are attributed through exposures (attribute_events)
            nulls = nulls & (df[EVENT] == EXPOSURE).fill_null(True)
        if nulls.any():
            row = int(nulls.arg_true()[0]) + 1
            what = " (an exposure must name its experiment)" if name == EXPERIMENT else ""
            raise DataValidationError(
                f"{source}, row {row}, field '{name}': expected a value, got null{what}"
            )
    for name in _FLOAT_COLS:
        if name in df.columns:
            bad = df[name].is_nan() | df[name].is_infinite()
            if bad.any():
                row = int(bad.arg_true()[0]) + 1
                raise DataValidationError(
                    f"{source}, row {row}, field '{name}': expected a finite number, "
                    f"got {df[name].filter(bad)[0]}"
                )
    if PROPENSITY in df.columns:
        p = df[PROPENSITY]
        bad = p.is_not_null() & ((p <= 0) | (p > 1))
        if bad.any():
            row = int(bad.arg_true()[0]) + 1
            raise DataValidationError(
                f"{source}, row {row}, field '{PROPENSITY}': expected a probability in (0, 1], "
                f"got {p.filter(bad)[0]}; log the probability the logging policy gave the shown item"
            )
    ordered = [*REQUIRED, *[c for c in df.columns if c not in REQUIRED]]
    return df.select(ordered)


HISTORY_REQUIRED: Final = (TIMESTAMP, UNIT_ID, EVENT, VALUE)


def validate_history(df: pl.DataFrame, *, source: str = "history") -> pl.DataFrame:
    """Check a plain history / pre-period log (``timestamp``, ``unit_id``, ``event``, ``value``; other
    columns are ignored) and return those four columns normalised."""
    missing = [c for c in HISTORY_REQUIRED if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{source}: missing column(s) {missing}; found {df.columns}. A history log needs "
            f"{list(HISTORY_REQUIRED)} (experiment columns are not needed; see docs/experiments.md)"
        )
    df = df.select(HISTORY_REQUIRED)
    for name in (UNIT_ID, EVENT):
        df = _cast(df, name, pl.String, source)
    for name in (TIMESTAMP, VALUE):
        df = _cast(df, name, pl.Float64, source)
        bad = df[name].is_nan() | df[name].is_infinite()
        if bad.any():
            row = int(bad.arg_true()[0]) + 1
            raise DataValidationError(f"{source}, row {row}, field '{name}': expected a finite number")
    for name in HISTORY_REQUIRED:
        nulls = df[name].is_null()
        if nulls.any():
            row = int(nulls.arg_true()[0]) + 1
            raise DataValidationError(f"{source}, row {row}, field '{name}': expected a value, got null")
    return df


def attribute_events(events: pl.DataFrame, experiment: str) -> tuple[pl.DataFrame, int]:
    """Rows of ``experiment``: its labelled rows plus unlabelled metric events credited to it.

    An unlabelled metric event (null ``experiment``) of a unit exposed in ``experiment`` gets the
    experiment and the variant of the unit's first exposure if it happened at or after that exposure;
    earlier events are pre-treatment and are not counted. Returns the rows and the number of
    unlabelled events of exposed units that were left out for being earlier than the exposure.
    """
    labelled = events.filter(pl.col(EXPERIMENT) == experiment)
    first = (
        labelled.filter((pl.col(EVENT) == EXPOSURE) & pl.col(VARIANT).is_not_null())
        .sort(TIMESTAMP)
        .group_by(UNIT_ID, maintain_order=True)
        .agg(pl.col(TIMESTAMP).first().alias("_exposed_at"), pl.col(VARIANT).first().alias("_variant"))
    )
    loose = events.filter(pl.col(EXPERIMENT).is_null() & (pl.col(EVENT) != EXPOSURE))
    if loose.height == 0:
        return labelled, 0
    joined = loose.join(first, on=UNIT_ID, how="inner")
    after = joined.filter(pl.col(TIMESTAMP) >= pl.col("_exposed_at"))
    credited = after.with_columns(
        pl.lit(experiment).alias(EXPERIMENT), pl.col("_variant").alias(VARIANT)
    ).select(events.columns)
    return pl.concat([labelled, credited]).sort(TIMESTAMP, maintain_order=True), joined.height - after.height


def read_table(path: str | Path) -> pl.DataFrame:
    """Read Parquet or JSON lines without validation (e.g. a history log without experiment columns)."""
    path = Path(path)
    if not path.exists():
        raise DataValidationError(f"event log {path} does not exist; pass a .parquet or .jsonl file")
    if not path.is_file():
        raise DataValidationError(f"event log {path} is not a file; pass a .parquet or .jsonl file")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".jsonl", ".ndjson"):
        raise DataValidationError(
            f"event log {path}: unknown format '{suffix}'; expected .parquet, .jsonl or .ndjson"
        )
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path)
        return pl.read_ndjson(path, infer_schema_length=None)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        kind = "Parquet" if suffix == ".parquet" else "JSON lines (one JSON object per line)"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataValidationError(f"event log {path}: not readable as {kind}: {detail}") from exc


def read_events(path: str | Path) -> pl.DataFrame:
    """Read and validate an experiment event log from Parquet or JSON lines."""
    return validate_events(read_table(path), source=str(path))


class QualityIssue(BaseModel):
    """One kind of content problem: how many rows/units, and a few example ids."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str
    count: int
    examples: tuple[str, ...]
    handling: str


class LogQuality(BaseModel):
    """Content problems found in an event log (an empty ``issues`` means clean)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_rows: int
    issues: tuple[QualityIssue, ...]

    @property
    def clean(self) -> bool:
        """Whether no issue was found."""
        return not self.issues

    def summary(self) -> str:
        """One line per issue, for error messages and reports."""
        return "\n".join(
            f"- {i.kind}: {i.count} (e.g. {', '.join(i.examples)}); {i.handling}" for i in self.issues
        )


def _examples(series: pl.Series) -> tuple[str, ...]:
    return tuple(str(v) for v in series.unique(maintain_order=True).head(_N_EXAMPLES).to_list())


def mixed_units(df: pl.DataFrame) -> pl.DataFrame:
    """(experiment, unit_id) pairs seen in more than one variant."""
    return (
        df.filter(pl.col(VARIANT).is_not_null())
        .group_by(EXPERIMENT, UNIT_ID)
        .agg(pl.col(VARIANT).n_unique().alias("n_variants"))
        .filter(pl.col("n_variants") > 1)
        .sort(EXPERIMENT, UNIT_ID)
    )


def check_quality(df: pl.DataFrame) -> LogQuality:
    """Find rows without a variant, units in two arms, exact duplicate events and negative values.

    The ``handling`` of each issue says what :func:`vitrina.experiments.analysis` does with it.
    """
    issues: list[QualityIssue] = []
    no_variant = df.filter(pl.col(VARIANT).is_null() | (pl.col(VARIANT).str.strip_chars() == ""))
    if no_variant.height:
        issues.append(
            QualityIssue(
                kind="rows without a variant",
                count=no_variant.height,
                examples=_examples(no_variant[UNIT_ID]),
                handling="these rows are excluded from the analysis",
            )
        )
    mixed = mixed_units(df)
    if mixed.height:
        issues.append(
            QualityIssue(
                kind="units seen in more than one variant",
                count=mixed.height,
                examples=_examples(mixed[UNIT_ID]),
                handling="these units are excluded from the analysis (check the assignment is per unit, "
                "not per session)",
            )
        )
    dup_mask = df.is_duplicated()
    if dup_mask.any():
        dups = df.filter(dup_mask)
        n_extra = df.height - df.unique().height
        issues.append(
            QualityIssue(
                kind="duplicated events (identical rows beyond the first)",
                count=n_extra,
                examples=_examples(dups[UNIT_ID]),
                handling="only the first copy of each is counted",
            )
        )
    negative = df.filter(pl.col(VALUE) < 0)
    if negative.height:
        issues.append(
            QualityIssue(
                kind="events with a negative value",
                count=negative.height,
                examples=_examples(negative[UNIT_ID]),
                handling="kept as logged (refunds are negative); fix the log if they are errors",
            )
        )
    return LogQuality(n_rows=df.height, issues=tuple(issues))
