"""Guardrails with non-inferiority margins (issue 13, point 10)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from vitrina.experiments.analysis import analyze
from vitrina.experiments.design import Design, DesignSpec, HistoryEstimate, WeekPlan
from vitrina.experiments.metrics import MetricSpec
from vitrina.experiments.stats import MeanStats, PairStats, noninferiority_p, ratio_test, welch_test


def test_absolute_margin_matches_statsmodels_one_sided_z() -> None:
    rng = np.random.default_rng(0)
    c, t = rng.normal(10, 2, 3000), rng.normal(9.9, 2.5, 2500)
    est = welch_test(MeanStats.from_values(c), MeanStats.from_values(t))
    for margin in (0.05, 0.2, 0.4):
        _, p = CompareMeans(DescrStatsW(t), DescrStatsW(c)).ztest_ind(
            alternative="larger", usevar="unequal", value=-margin
        )
        assert noninferiority_p(est, margin, relative=False) == pytest.approx(2 * p, rel=1e-9)
    # lower is better: "worse" is an increase
    _, p = CompareMeans(DescrStatsW(t), DescrStatsW(c)).ztest_ind(
        alternative="smaller", usevar="unequal", value=0.2
    )
    assert noninferiority_p(est, 0.2, relative=False, higher_is_better=False) == pytest.approx(2 * p)


def test_relative_margin_is_dual_to_the_fieller_bound() -> None:
    """p < alpha exactly when the relative interval's lower bound is above -margin."""
    rng = np.random.default_rng(1)
    x = rng.poisson(3.0, (2, 4000)).astype(float)
    y = x + rng.poisson(20.0, (2, 4000))
    est = ratio_test(PairStats.from_values(x[0], y[0]), PairStats.from_values(0.98 * x[1], y[1]))
    bound = -float(est.rel_ci_low)
    assert bound > 0
    assert noninferiority_p(est, bound * 1.001) < 0.05 < noninferiority_p(est, bound * 0.999)
    assert noninferiority_p(est, bound) == pytest.approx(0.05, abs=1e-6)


def _design(margin: float | None) -> Design:
    spec = DesignSpec(
        name="exp",
        hypothesis="clicks go up, revenue does not drop",
        primary=MetricSpec(name="clicks", event="click"),
        guardrails=(MetricSpec(name="revenue", event="purchase", margin=margin),),
        mde=0.1,
    )
    week = WeekPlan(
        weeks=1,
        units=8000.0,
        baseline=1.0,
        sd=1.0,
        required_units=800.0,
        fixed_units=800.0,
        mde_absolute=0.1,
        achievable_mde=0.05,
        power=0.99,
        extrapolated=False,
    )
    return Design(
        created_at=0.0,
        spec=spec,
        history=HistoryEstimate(history_days=14, users_a=1.0, users_b=1.0, rho=None),
        weeks=(week,),
        duration_weeks=1,
        feasible=True,
        sized_for="fixed horizon",
        message="",
    )


def _log(n: int, revenue_lift: float, seed: int) -> pl.DataFrame:
    """n units per arm; clicks +20% in treatment; revenue ~ N(10, 2) per unit times 1 + revenue_lift."""
    rng = np.random.default_rng(seed)
    ids = [f"u{i}" for i in range(2 * n)]
    treated = np.arange(2 * n) % 2 == 1
    clicks = rng.poisson(np.where(treated, 2.4, 2.0))
    revenue = rng.normal(10, 2, 2 * n) * np.where(treated, 1 + revenue_lift, 1.0)
    variant = np.where(treated, "treatment", "control").tolist()
    return pl.DataFrame(
        {
            "timestamp": np.r_[np.zeros(2 * n), np.ones(4 * n)],
            "unit_id": ids * 3,
            "experiment": "exp",
            "variant": variant * 3,
            "event": ["exposure"] * (2 * n) + ["click"] * (2 * n) + ["purchase"] * (2 * n),
            "value": np.r_[np.ones(2 * n), clicks, revenue],
        }
    )


def test_guardrail_margin_decides_by_non_inferiority() -> None:
    log = _log(4000, -0.005, 2)  # revenue 0.5% lower: not significant, within 5%, not within 0.1%
    plain = analyze(log, _design(None))
    assert plain.decisions["treatment"] == "ship"  # no margin: not significantly worse is "not harmed"
    wide = analyze(log, _design(0.05))
    guard = next(r for r in wide.results if r.role == "guardrail")
    assert guard.noninferiority and guard.verdict.startswith("non-inferior")
    assert wide.decisions["treatment"] == "ship"
    narrow = analyze(log, _design(0.001))
    guard = next(r for r in narrow.results if r.role == "guardrail")
    assert guard.outcome == "loss" and guard.verdict.startswith("not shown non-inferior")
    assert narrow.decisions["treatment"] == "dont_ship" and "not shown" in narrow.reasons["treatment"]
    # too few units to show non-inferiority at all: the guardrail is flagged, not silently passed
    small = analyze(_log(30, 0.0, 3), _design(0.01))
    assert next(r for r in small.results if r.role == "guardrail").outcome == "loss"


def test_margin_only_on_guardrails() -> None:
    with pytest.raises(ValidationError, match="non-inferiority margins are for guardrails"):
        DesignSpec(
            name="x", hypothesis="h", primary=MetricSpec(name="c", event="click", margin=0.01), mde=0.1
        )
