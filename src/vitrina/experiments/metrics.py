"""Metric definitions and their per-unit aggregation from an event log (one row per unit, never per event)."""

from __future__ import annotations

from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from vitrina.experiments.schema import EVENT, UNIT_ID, VALUE

__all__ = ["MetricKind", "MetricSpec", "per_unit"]

MetricKind = Literal["mean", "proportion", "ratio", "quantile"]
NUM = "num"
DEN = "den"


class MetricSpec(BaseModel):
    """A metric computed per unit from events.

    * ``mean``: per-unit sum of ``value`` over ``event`` rows (0 for exposed units without one).
    * ``proportion``: per-unit 1 if the unit has any ``event`` row, else 0.
    * ``ratio``: sum over units of the ``event`` values / sum of the ``denominator_event`` values
      (e.g. clicks / impressions), analysed by the delta method on per-unit sums.
    * ``quantile``: the ``q`` quantile across units of the per-unit sums (bootstrap interval).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, description="metric name in reports")
    kind: MetricKind = Field("mean", description="mean, proportion, ratio or quantile (see above)")
    event: str = Field(min_length=1, description="event type counted (the numerator for ratios)")
    denominator_event: str | None = Field(None, description="ratio only: event type of the denominator")
    q: float = Field(default=0.5, gt=0.0, lt=1.0, description="quantile only: which quantile (0.5 = median)")
    higher_is_better: bool = Field(True, description="direction of improvement")
    margin: float | None = Field(
        None,
        gt=0.0,
        description="guardrails only: non-inferiority margin; the guardrail passes only if the interval's "
        "bound on the worse side is inside it (not set: harmed only if significantly worse)",
    )
    margin_relative: bool = Field(
        True, description="margin relative to the control (0.01 = 1% worse) or absolute"
    )

    @model_validator(mode="after")
    def _check_ratio(self) -> MetricSpec:
        if (self.kind == "ratio") != (self.denominator_event is not None):
            raise ValueError(
                f"metric '{self.name}': denominator_event is required for kind='ratio' and only then; "
                f"got kind={self.kind!r}, denominator_event={self.denominator_event!r}"
            )
        return self


def per_unit(events: pl.DataFrame, metric: MetricSpec, units: pl.DataFrame) -> pl.DataFrame:
    """Per-unit ``num`` (and ``den`` for ratios) for every unit in ``units`` (column ``unit_id``).

    Units without the event get 0; the output keeps all columns of ``units`` and their order.
    """

    def sums(event: str, alias: str) -> pl.DataFrame:
        rows = events.filter(pl.col(EVENT) == event)
        agg = pl.len().cast(pl.Float64) if metric.kind == "proportion" else pl.col(VALUE).sum()
        return rows.group_by(UNIT_ID).agg(agg.alias(alias))

    out = units.join(sums(metric.event, NUM), on=UNIT_ID, how="left", maintain_order="left")
    out = out.with_columns(pl.col(NUM).fill_null(0.0))
    if metric.kind == "proportion":
        out = out.with_columns((pl.col(NUM) > 0).cast(pl.Float64).alias(NUM))
    if metric.denominator_event is not None:  # kind == "ratio", see the validator
        out = out.join(sums(metric.denominator_event, DEN), on=UNIT_ID, how="left", maintain_order="left")
        out = out.with_columns(pl.col(DEN).fill_null(0.0))
    return out
