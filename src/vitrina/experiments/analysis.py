"""Analysis of an experiment log against its pre-registered design: SRM, effects, corrections, decision.

Units are the randomisation units with an ``exposure`` row; metrics are aggregated per unit before any
test (ratio metrics keep per-unit numerator and denominator). Content problems of the log are never
dropped silently: they are listed in :attr:`Analysis.quality` with counts and example ids and the
report shows them, or ``on_bad="raise"`` refuses the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from vitrina.errors import DataValidationError
from vitrina.experiments.bootstrap import bootstrap_quantile_test
from vitrina.experiments.design import Decision, Design
from vitrina.experiments.metrics import DEN, NUM, MetricSpec, per_unit
from vitrina.experiments.multiple import benjamini_hochberg, holm
from vitrina.experiments.schema import (
    EVENT,
    EXPERIMENT,
    EXPOSURE,
    TIMESTAMP,
    UNIT_ID,
    VARIANT,
    LogQuality,
    QualityIssue,
    attribute_events,
    check_quality,
    mixed_units,
    validate_events,
    validate_history,
)
from vitrina.experiments.sequential import DRAWS, look_estimates, msprt, rerandomised_z, spending_test
from vitrina.experiments.srm import SrmResult, srm_test
from vitrina.experiments.stats import (
    EffectEstimate,
    MeanStats,
    NotEstimable,
    PairStats,
    cuped_test,
    noninferiority_p,
    ratio_test,
    two_proportion_test,
    welch_test,
)

__all__ = ["Analysis", "MetricResult", "SequentialPath", "analyze"]

_DAY = 86_400.0

PRE = "pre"


@dataclass(frozen=True)
class MetricResult:
    """One metric, one treatment vs control."""

    metric: MetricSpec
    role: str  # "primary", "guardrail" or "segment"
    variant: str
    method: str
    estimate: EffectEstimate | None  # None: not estimable, see ``not_estimable``
    p_holm: float
    p_bh: float
    p_decision: float
    segment: str = ""
    not_estimable: str = ""

    @property
    def noninferiority(self) -> bool:
        """A guardrail with a margin: ``p_decision`` tests non-inferiority, not a difference."""
        return self.role == "guardrail" and self.metric.margin is not None

    @property
    def significant(self) -> bool:
        """Significant at the design's alpha with the p-value the decision uses."""
        return self.estimate is not None and self.p_decision < self.estimate.alpha

    @property
    def outcome(self) -> Literal["win", "flat", "loss"]:
        """Significantly better / not significant / significantly worse, given the metric's direction.

        A non-inferiority guardrail is ``loss`` when non-inferiority is not shown, else ``flat``.
        """
        if self.noninferiority and self.estimate is not None:
            return "flat" if self.significant else "loss"
        if self.estimate is None or not self.significant:
            return "flat"
        better = (float(self.estimate.effect) > 0) == self.metric.higher_is_better
        return "win" if better else "loss"

    @property
    def verdict(self) -> str:
        """The outcome in words, with the margin for non-inferiority guardrails."""
        if not self.noninferiority or self.estimate is None:
            return self.outcome
        m = self.metric
        margin = f"{m.margin:.3g}{' relative' if m.margin_relative else ' absolute'}"
        shown = "non-inferior" if self.significant else "not shown non-inferior"
        return f"{shown} (margin {margin})"


@dataclass(frozen=True)
class SequentialPath:
    """Daily looks at the primary metric of one treatment: estimates and sequential p-values."""

    variant: str
    method: str
    days: np.ndarray
    effect: np.ndarray
    se: np.ndarray
    p_value: np.ndarray
    ci_low: np.ndarray | None
    ci_high: np.ndarray | None


@dataclass(frozen=True)
class Analysis:
    """Everything the report needs."""

    design: Design
    quality: LogQuality
    units: dict[str, int]
    srm: SrmResult
    results: tuple[MetricResult, ...]
    sequential: tuple[SequentialPath, ...]
    decisions: dict[str, Decision]
    reasons: dict[str, str]


def _units(events: pl.DataFrame, segments: tuple[str, ...]) -> pl.DataFrame:
    exposures = events.filter(pl.col(EVENT) == EXPOSURE)
    missing = [s for s in segments if s not in events.columns]
    if missing:
        raise DataValidationError(
            f"segment column(s) {missing} not in the event log (columns: {events.columns}); "
            "log them on exposure rows or drop them from the design"
        )
    return (
        exposures.sort(TIMESTAMP)
        .group_by(UNIT_ID, maintain_order=True)
        .agg(
            pl.col(VARIANT).first(),
            pl.col(TIMESTAMP).first(),
            *[pl.col(s).first().cast(pl.String) for s in segments],
        )
        .sort(UNIT_ID)
    )


def _pre_period(pre_events: pl.DataFrame, units: pl.DataFrame) -> pl.DataFrame:
    """Validate a plain pre-period log and refuse rows at or after their unit's first exposure.

    A covariate measured after assignment can be moved by the treatment, and CUPED would then remove
    part of the effect.
    """
    pre = validate_history(pre_events, source="pre-period log")
    joined = pre.join(units.select(UNIT_ID, pl.col(TIMESTAMP).alias("_exposed_at")), on=UNIT_ID, how="inner")
    overlap = joined.filter(pl.col(TIMESTAMP) >= pl.col("_exposed_at"))
    if overlap.height:
        first = overlap.row(0, named=True)
        raise DataValidationError(
            f"pre-period log overlaps exposure: {overlap.height} event(s) at or after their unit's first "
            f"exposure (e.g. unit {first[UNIT_ID]!r}: event at {first[TIMESTAMP]:.0f}, exposed at "
            f"{first['_exposed_at']:.0f}); pass events from before the test only"
        )
    return pre


def _clean(events: pl.DataFrame, quality: LogQuality) -> tuple[pl.DataFrame, LogQuality]:
    """Apply the handling stated in :func:`check_quality` and report units with events but no exposure."""
    mixed = mixed_units(events).select(UNIT_ID)
    events = events.filter(pl.col(VARIANT).is_not_null() & (pl.col(VARIANT).str.strip_chars() != ""))
    events = events.join(mixed, on=UNIT_ID, how="anti").unique(maintain_order=True)
    exposed = events.filter(pl.col(EVENT) == EXPOSURE).select(UNIT_ID).unique()
    orphans = events.join(exposed, on=UNIT_ID, how="anti")
    if orphans.height:
        ids = orphans[UNIT_ID].unique(maintain_order=True)
        issue = QualityIssue(
            kind="units with metric events but no exposure",
            count=ids.len(),
            examples=tuple(ids.head(5).to_list()),
            handling="excluded (they were never shown the variant); check exposure logging",
        )
        quality = LogQuality(n_rows=quality.n_rows, issues=(*quality.issues, issue))
    return events.join(exposed, on=UNIT_ID, how="semi"), quality


def _why_not_estimable(metric: MetricSpec, control: pl.DataFrame, treatment: pl.DataFrame) -> str:
    """Why the data cannot estimate this comparison ("" when they can)."""
    if control.height < 2 or treatment.height < 2:
        return f"needs 2+ units per arm, got {control.height} control and {treatment.height} treatment"
    if metric.kind == "ratio" and min(float(control[DEN].sum()), float(treatment[DEN].sum())) <= 0:
        return f"denominator event '{metric.denominator_event}' never occurs in an arm"
    cols = [NUM, DEN] if metric.kind == "ratio" else [NUM]
    if all(control[c].n_unique() == 1 and treatment[c].n_unique() == 1 for c in cols):
        both = pl.concat([control.select(cols), treatment.select(cols)])
        if all(both[c].n_unique() == 1 for c in cols):
            return (
                f"metric is constant: every unit has {float(both[NUM][0]):g} "
                f"(does event '{metric.event}' occur in the log?)"
            )
        return "no variation within either arm (every unit of an arm has the same value)"
    return ""


def _test(
    metric: MetricSpec, control: pl.DataFrame, treatment: pl.DataFrame, alpha: float, cuped: bool, seed: int
) -> tuple[str, EffectEstimate]:
    """Method name and estimate; raises :class:`NotEstimable` when the data cannot support one."""
    reason = _why_not_estimable(metric, control, treatment)
    if reason:
        raise NotEstimable(reason)
    if cuped and pl.concat([control[PRE], treatment[PRE]]).n_unique() == 1:
        cuped = False  # a constant covariate explains nothing: plain test
    if metric.kind == "quantile":
        est = bootstrap_quantile_test(control[NUM], treatment[NUM], q=metric.q, alpha=alpha, seed=seed)
        return f"bootstrap q{metric.q:g}", est
    if metric.kind == "ratio":
        c, t = (PairStats.from_values(a[NUM], a[DEN]) for a in (control, treatment))
        return "delta-method ratio", ratio_test(c, t, alpha)
    if cuped:
        c, t = (PairStats.from_values(a[PRE], a[NUM]) for a in (control, treatment))
        return "CUPED Welch", cuped_test(c, t, alpha)
    cm, tm = (MeanStats.from_values(a[NUM]) for a in (control, treatment))
    if metric.kind == "proportion":
        return "two-proportion z", two_proportion_test(cm, tm, alpha)
    return "Welch t", welch_test(cm, tm, alpha)


def _values(
    events: pl.DataFrame, metric: MetricSpec, units: pl.DataFrame, pre_events: pl.DataFrame | None
) -> pl.DataFrame:
    values = per_unit(events, metric, units)
    if pre_events is not None and metric.kind in ("mean", "proportion"):
        pre = per_unit(pre_events, metric, units.select(UNIT_ID)).select(UNIT_ID, pl.col(NUM).alias(PRE))
        values = values.join(pre, on=UNIT_ID, how="left", maintain_order="left")
    return values


def _daily_values(
    events: pl.DataFrame, metric: MetricSpec, units: pl.DataFrame, start: float, n_days: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Per-unit cumulative numerator (and denominator) at the end of each day, and who had entered."""
    num = np.zeros((units.height, n_days))
    den = np.zeros((units.height, n_days)) if metric.kind == "ratio" else None
    for day in range(n_days):
        values = per_unit(events.filter(pl.col(TIMESTAMP) < start + (day + 1) * _DAY), metric, units)
        num[:, day] = values[NUM].to_numpy()
        if den is not None:
            den[:, day] = values[DEN].to_numpy()
    entered = units[TIMESTAMP].to_numpy()[:, None] < start + np.arange(1, n_days + 1) * _DAY
    return num, den, entered.astype(np.float64)


def _sequential(
    design: Design, events: pl.DataFrame, units: pl.DataFrame, treatment: str, seed: int
) -> SequentialPath:
    """Daily looks at the primary metric: mSPRT, or the re-randomisation spending test (``spending``).

    The pair's units are ordered by exposure time, so the re-drawn labels of the units seen by day k
    and hence the p-values of days 1..k are the same at an interim analysis and at the end.
    """
    spec = design.spec
    start = float(units[TIMESTAMP].min())
    n_days = int((float(events[TIMESTAMP].max()) - start) // _DAY) + 1
    pair = units.filter(pl.col(VARIANT).is_in([spec.control, treatment])).sort(TIMESTAMP, UNIT_ID)
    num, den, entered = _daily_values(events, spec.primary, pair, start, n_days)
    treated = (pair[VARIANT] == treatment).to_numpy()
    days = np.arange(1, n_days + 1)
    if spec.sequential == "msprt":
        est = look_estimates(treated, num, entered, den, spec.alpha)
        eff, var = np.asarray(est.effect), np.asarray(est.se) ** 2
        ok = np.isfinite(eff) & np.isfinite(var) & (var > 0)
        res = msprt(np.where(ok, eff, 0.0), np.where(ok, var, 1e300), design.mde_absolute, spec.alpha)
        # No confidence sequence: the daily estimand of a cumulative per-unit metric drifts (it grows
        # with exposure time), so an interval intersected across looks is not valid for any fixed
        # effect (the audit saw [0.844, 0.720] around a truth of 0.988); only the p-value is kept.
        return SequentialPath(treatment, "mSPRT", days, eff, np.sqrt(var), res.p_value, None, None)
    planned_days = 7 * (design.duration_weeks or spec.max_weeks)
    if n_days > planned_days:
        raise DataValidationError(
            f"the log covers {n_days} days but the design planned {planned_days} daily looks; analyse the "
            "planned window only (filter the log) or re-design"
        )
    share = spec.variants[treatment] / (spec.variants[treatment] + spec.variants[spec.control])
    z = rerandomised_z(treated, num, entered, share, np.random.default_rng(seed), DRAWS, den)
    res = spending_test(z, planned_days, spec.alpha)
    est = look_estimates(treated, num, entered, den, spec.alpha)
    return SequentialPath(
        treatment,
        f"re-randomised |Z| spending, {planned_days} planned daily looks",
        days,
        np.asarray(est.effect),
        np.asarray(est.se),
        res.p_value,
        None,
        None,
    )


def analyze(
    events: pl.DataFrame,
    design: Design,
    pre_events: pl.DataFrame | None = None,
    on_bad: Literal["report", "raise"] = "report",
    seed: int = 0,
) -> Analysis:
    """Analyse ``events`` (schema of :mod:`vitrina.experiments.schema`) for ``design``.

    Metric events without an experiment are attributed through the units' exposures
    (:func:`~vitrina.experiments.schema.attribute_events`). ``pre_events`` (a plain history:
    ``timestamp``, ``unit_id``, ``event``, ``value``) from before each unit's exposure enable CUPED
    when the design asks for it; rows at or after a unit's first exposure are refused.
    ``on_bad="raise"`` refuses logs with content problems. ``seed`` fixes the bootstrap resamples and
    the re-randomisations of the daily-looks test.
    """
    spec = design.spec
    events = validate_events(events)
    exp_events, n_early = attribute_events(events, spec.name)
    if exp_events.height == 0:
        found = events[EXPERIMENT].drop_nulls().unique().sort().head(10).to_list()
        raise DataValidationError(f"no events for experiment {spec.name!r}; the log has experiments {found}")
    quality = check_quality(exp_events)
    if n_early:
        early = QualityIssue(
            kind="unlabelled metric events before the unit's first exposure",
            count=n_early,
            examples=(),
            handling="not counted (they happened before the unit saw its variant)",
        )
        quality = LogQuality(n_rows=quality.n_rows, issues=(*quality.issues, early))
    clean, quality = _clean(exp_events, quality)
    if on_bad == "raise" and not quality.clean:
        raise DataValidationError(f"event log of {spec.name!r} has content problems:\n{quality.summary()}")
    units = _units(clean, spec.segments)
    unknown = sorted(set(units[VARIANT].to_list()) - set(spec.variants))
    if unknown:
        raise DataValidationError(
            f"variants {unknown} are in the log but not in the design {list(spec.variants)}; fix the labels"
        )
    counts = {v: int((units[VARIANT] == v).sum()) for v in spec.variants}
    srm = srm_test(counts, spec.variants)
    if spec.cuped and pre_events is None:
        raise DataValidationError(f"design {spec.name!r} asks for CUPED: pass pre_events (a pre-period log)")
    pre = _pre_period(pre_events, units) if spec.cuped and pre_events is not None else None
    treatments = [v for v in spec.variants if v != spec.control]
    cuped = pre is not None
    rows: list[tuple[MetricSpec, str, str, str, EffectEstimate | None, str, str]] = []

    def add(role: str, metric: MetricSpec, variant: str, c: pl.DataFrame, t: pl.DataFrame, seg: str) -> None:
        try:
            method, est = _test(metric, c, t, spec.alpha, cuped, seed)
        except NotEstimable as exc:
            rows.append((metric, role, variant, "not estimable", None, seg, str(exc)))
        else:
            rows.append((metric, role, variant, method, est, seg, ""))

    for role, metric in [("primary", spec.primary), *(("guardrail", g) for g in spec.guardrails)]:
        values = _values(clean, metric, units, pre)
        control = values.filter(pl.col(VARIANT) == spec.control)
        for variant in treatments:
            add(role, metric, variant, control, values.filter(pl.col(VARIANT) == variant), "")
        segments = spec.segments if role == "primary" else ()
        for segment in segments:
            for level in values[segment].drop_nulls().unique().sort().to_list():
                part = values.filter(pl.col(segment) == level)
                c = part.filter(pl.col(VARIANT) == spec.control)
                for variant in treatments:
                    t = part.filter(pl.col(VARIANT) == variant)
                    if min(c.height, t.height) >= 2:
                        add("segment", metric, variant, c, t, f"{segment}={level}")
    p = np.array([1.0 if r[4] is None else float(r[4].p_value) for r in rows])
    p = np.where(np.isnan(p), 1.0, p)
    # guardrails with a margin enter their correction with the non-inferiority p-value
    p_guard = np.array(
        [
            noninferiority_p(est, m.margin, m.margin_relative, m.higher_is_better)
            if role == "guardrail" and m.margin is not None and est is not None
            else pv
            for (m, role, _, _, est, _, _), pv in zip(rows, p, strict=True)
        ]
    )
    main = np.array([r[1] != "segment" for r in rows])
    p_holm, p_bh = np.ones_like(p), np.ones_like(p)
    p_holm[main], p_bh[main] = holm(p[main]), benjamini_hochberg(p[main])
    guard = np.array([r[1] == "guardrail" for r in rows])
    seg = ~main
    p_decision = p.copy()
    adjust = holm if spec.correction == "holm" else benjamini_hochberg
    if guard.any():
        p_decision[guard] = adjust(p_guard[guard])
    if seg.any():
        p_decision[seg] = benjamini_hochberg(p[seg])
    sequential: list[SequentialPath] = []
    if spec.sequential != "none":
        for variant in treatments:
            i = next(k for k, r in enumerate(rows) if r[1] == "primary" and r[2] == variant)
            if rows[i][4] is None:
                continue
            path = _sequential(design, clean, units, variant, seed)
            sequential.append(path)
            p_decision[i] = float(path.p_value[-1])
    primary_rows = np.array([r[1] == "primary" for r in rows])
    if primary_rows.sum() > 1:  # several treatments each against control: Holm across the arms
        p_decision[primary_rows] = holm(p_decision[primary_rows])
    results = tuple(
        MetricResult(m, role, v, method, est, float(ph), float(pb), float(pd), segment, why)
        for (m, role, v, method, est, segment, why), ph, pb, pd in zip(
            rows, p_holm, p_bh, p_decision, strict=True
        )
    )
    decisions: dict[str, Decision] = {}
    reasons: dict[str, str] = {}
    for variant in treatments:
        primary = next(r for r in results if r.role == "primary" and r.variant == variant)
        harmed = [
            r.metric.name + (f" ({r.verdict})" if r.noninferiority else "")
            for r in results
            if r.role == "guardrail" and r.variant == variant and r.outcome == "loss"
        ]
        if srm.mismatch:
            decisions[variant] = "inconclusive"
            reasons[variant] = (
                "sample ratio mismatch: the pre-registered rule is not applied to a broken split"
            )
            continue
        if primary.estimate is None:
            decisions[variant] = "inconclusive"
            reasons[variant] = f"primary '{primary.metric.name}' not estimable: {primary.not_estimable}"
            continue
        decisions[variant] = spec.decision.decide(primary.outcome, bool(harmed))
        unknown = [
            r.metric.name
            for r in results
            if r.role == "guardrail" and r.variant == variant and r.estimate is None
        ]
        reasons[variant] = (
            f"primary '{primary.metric.name}': {primary.outcome} (p = {primary.p_decision:.3g}); guardrails "
            + (f"harmed: {', '.join(harmed)}" if harmed else "not harmed")
            + (f"; not estimable (not checked): {', '.join(unknown)}" if unknown else "")
        )
    return Analysis(
        design=design,
        quality=quality,
        units=counts,
        srm=srm,
        results=results,
        sequential=tuple(sequential),
        decisions=decisions,
        reasons=reasons,
    )
