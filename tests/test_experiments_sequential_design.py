"""Sequential designs are sized for the test the analysis runs (issue 13, point 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats as sps

from vitrina.experiments.design import DesignSpec, h1_share_factor, load_design, plan, required_units
from vitrina.experiments.metrics import MetricSpec
from vitrina.experiments.sequential import (
    DRAWS,
    LookModel,
    look_estimates,
    msprt,
    required_drift,
    rerandomised_z,
    sequential_power,
    spending_test,
)

DAY = 86_400.0


def _history(n_users: int, days: int, seed: int) -> pl.DataFrame:
    """Users with gamma visit rates over ``days`` days; each visit has Poisson(1) clicks."""
    rng = np.random.default_rng(seed)
    visits = rng.poisson(rng.gamma(0.7, 1 / 7, n_users)[:, None] * np.ones(days))
    user, day = np.nonzero(visits)
    n = visits[user, day]
    owner, when = np.repeat(user, n), np.repeat(day, n) + rng.random(n.sum())
    clicks = rng.poisson(1.0, owner.size)
    return pl.DataFrame(
        {
            "timestamp": np.r_[when, when] * DAY,
            "unit_id": np.r_[owner, owner].astype(str),
            "event": ["visit"] * owner.size + ["click"] * owner.size,
            "value": np.r_[np.ones(owner.size), clicks],
        }
    )


def test_sequential_designs_need_more_units_than_one_look(tmp_path: Path) -> None:
    history = _history(4000, 28, 0)
    spec = DesignSpec(
        name="seq", hypothesis="h", primary=MetricSpec(name="clicks", event="click"), mde=0.15, max_weeks=3
    )
    fixed, spending, mixture = (
        plan(spec.model_copy(update={"sequential": s}), history) for s in ("none", "spending", "msprt")
    )
    assert fixed.sized_for.startswith("fixed horizon")
    for a, b, c in zip(fixed.weeks, spending.weeks, mixture.weeks, strict=True):
        assert a.inflation == 1.0 and a.required_units == a.fixed_units
        assert b.fixed_units == pytest.approx(a.required_units)
        assert 1.0 < b.inflation < c.inflation  # spending test < mSPRT (always valid, pays more)
        assert b.required_units == pytest.approx(b.fixed_units * b.inflation)
        assert c.power < b.power < a.power  # at the same units, looking daily costs power
    weeks = spending.duration_weeks
    assert (
        weeks is not None
        and spending.sized_for == f"re-randomised |Z| spending test, {7 * weeks} daily looks"
    )
    assert "sized for the re-randomised" in spending.message
    assert spending.weeks[weeks - 1].power >= 0.8
    # the daily z statistics' correlation is measured on the history: a correlation matrix, weaker
    # between distant days
    corr = np.array(spending.history.daily_corr)
    assert corr.shape == (21, 21) and np.allclose(corr, corr.T) and np.allclose(np.diag(corr), 1.0)
    assert np.linalg.eigvalsh(corr).min() > -1e-8 and 0 < corr[0, -1] < corr[13, -1] < corr[19, -1] < 1
    # at the design's achievable MDE the sequential test has the target power
    week = spending.weeks[-1]
    at_reach = plan(
        spec.model_copy(update={"sequential": "spending", "mde": week.achievable_mde / week.baseline}),
        history,
    )
    assert at_reach.weeks[-1].power == pytest.approx(0.8, abs=0.01)
    spending.save(tmp_path / "d.json")
    assert load_design(tmp_path / "d.json") == spending
    # the daily looks do not use CUPED, so a sequential plan does not count on it
    cuped = plan(spec.model_copy(update={"sequential": "spending", "cuped": True, "pre_weeks": 1}), history)
    assert cuped.history.rho is None and "CUPED is not applied to the daily looks" in cuped.message


def _experiments(runs: int, looks: int, per_look: int, effect: float, seed: int):
    """Normal per-unit values (sd 1) fixed at entry, ``per_look`` units entering before each look."""
    rng = np.random.default_rng(seed)
    n = looks * per_look
    present = (np.repeat(np.arange(looks), per_look)[:, None] <= np.arange(looks)).astype(float)
    for _ in range(runs):
        treated = rng.random(n) < 0.5
        x = (rng.normal(size=n) + effect * treated)[:, None] * present
        yield treated, x, present, rng


def test_required_drift_delivers_the_power_of_the_analysis_test() -> None:
    """Size with the model, then run the analysis's own tests on data of that size: power ~80%."""
    looks, per_look = 5, 50
    info = np.arange(1, looks + 1) / looks
    model = LookModel.build(np.sqrt(info), 1 / np.sqrt(info))
    z = float(sps.norm.ppf(0.975))
    for test in ("spending", "msprt"):
        theta = required_drift(test, model, 0.05, 0.8)
        assert theta > z + float(sps.norm.ppf(0.8))  # more than one look at the end needs
        assert sequential_power(test, model, theta) == pytest.approx(0.8, abs=0.002)
        effect = theta * np.sqrt(4 / (looks * per_look))  # theta = effect / its se at the last look
        hits = 0
        for treated, x, present, rng in _experiments(
            300, looks, per_look, effect, 1 if test == "msprt" else 2
        ):
            if test == "spending":
                zs = rerandomised_z(treated, x, present, 0.5, rng, DRAWS)
                hits += bool(spending_test(zs, looks).rejected)
            else:
                est = look_estimates(treated, x, present)
                hits += bool(msprt(est.effect, np.asarray(est.se) ** 2, effect).rejected)
        assert abs(hits / 300 - 0.8) < 0.07, (test, hits / 300)


def test_treatment_variance_scales_with_the_lift() -> None:
    """A multiplicative lift widens the treatment arm: the design's units and its reach agree."""
    history = _history(3000, 28, 4)
    spec = DesignSpec(
        name="cv", hypothesis="h", primary=MetricSpec(name="clicks", event="click"), mde=0.2, max_weeks=2
    )
    week = plan(spec, history).weeks[-1]
    lift = week.mde_absolute / week.baseline
    equal = required_units(week.mde_absolute, week.sd, 0.05, 0.8, 4.0)
    assert week.required_units == pytest.approx(equal * (2 + 2 * (1 + lift) ** 2) / 4)
    reach = week.achievable_mde
    assert required_units(
        reach, week.sd, 0.05, 0.8, h1_share_factor(spec.variants, "control", reach / week.baseline)
    ) == pytest.approx(week.units)
