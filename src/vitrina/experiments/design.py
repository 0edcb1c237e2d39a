"""Pre-registered experiment design: hypothesis, metrics, decision rule, and MDE <-> sample size <-> duration.

A :class:`DesignSpec` is what the experimenter writes before the test; :func:`plan` adds what historical
logs say (per-unit variance, baseline, CUPED correlation, growth of distinct users over days) and the
resulting duration in whole weeks. User growth is fitted both as a power law ``users(d) = a * d**b``
(which never saturates) and as a saturating curve for a finite population of returning users with
new-user inflow ``n (1 - (1 + d / beta)**-alpha) + c d``; the one with the smaller error when fitted
on the first two thirds of the history and checked on the rest is used, and that backtest error is
stated in the design. The
:class:`Design` is frozen and saved as JSON next to the results; the analysis reads it back.

Sample size for a difference of means with arms sharing ``w_c`` and ``w_t`` of ``N`` units::

    N = (z_{1-alpha/2} + z_{power})^2 * sigma^2 * (1/w_c + 1/w_t) / mde^2

with sigma^2 the per-unit variance (the delta-method linearised variance
``(var_x - 2 R cov_xy + R^2 var_y) / mean_y^2`` for ratios), times ``1 - rho^2`` with CUPED. The
treatment arm's variance is the control's times ``(1 + lift)^2``, ``lift = mde / |baseline|``: a
treatment that multiplies the metric scales its spread too (constant coefficient of variation), and
sizing both arms with the control's variance delivered 76% instead of 80% at a 12% lift; the share
factor ``1/w_c + 1/w_t`` becomes ``1/w_c + (1 + lift)^2 / w_t`` (:func:`h1_share_factor`). A
proportion primary (without CUPED) is sized for the pooled two-proportion test with each arm's own
variance under the alternative (:func:`proportion_units`). CUPED is not applied to a ratio primary
(the analysis has no regression-adjusted delta method), so such a plan assumes no variance reduction.

A sequential design (``sequential="spending"`` or ``"msprt"``) is sized for the test the analysis
runs on it, daily looks over the whole weeks planned: the fixed-horizon size times the inflation
factor ``(theta_seq / (z_{1-alpha/2} + z_power))^2``, where ``theta_seq`` is the drift at the last
look with which the sequential test reaches the power (:func:`~vitrina.experiments.sequential.required_drift`,
by simulation with a fixed seed). The daily drift of z comes from the history: units by day from the
growth forecast and the primary's baseline and per-unit sd over the first d days, with the treatment
multiplying the metric by a constant factor (a relative lift, so a cumulative metric's effect grows
with it). The daily looks do not use CUPED, so a sequential plan assumes no variance reduction.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import optimize
from scipy import stats as sps

from vitrina.errors import ConfigError, DataValidationError
from vitrina.experiments.metrics import DEN, NUM, MetricSpec, per_unit
from vitrina.experiments.schema import TIMESTAMP, UNIT_ID, validate_history
from vitrina.experiments.sequential import LookModel, required_drift, sequential_power

__all__ = [
    "DESIGN_SCHEMA_VERSION",
    "MAX_WEEKS",
    "Decision",
    "DecisionRule",
    "Design",
    "DesignSpec",
    "HistoryEstimate",
    "NonUserUnitWarning",
    "WeekPlan",
    "achievable_mde",
    "h1_share_factor",
    "load_design",
    "plan",
    "plot_power_curve",
    "power_at",
    "proportion_power",
    "proportion_units",
    "required_units",
]

#: 2: sequential designs sized for their test (``sized_for``, ``fixed_units``, ``inflation``).
DESIGN_SCHEMA_VERSION = 2
#: Longest test a design may plan (two years): longer horizons are not an A/B test.
MAX_WEEKS = 104
Decision = Literal["ship", "dont_ship", "inconclusive"]
_DAY = 86_400.0


class NonUserUnitWarning(UserWarning):
    """The unit of randomisation is not the user: one user can see both arms."""


class DecisionRule(BaseModel):
    """Decision for each outcome of the primary metric and the guardrails, fixed before the test.

    ``win``/``loss``: primary significantly better/worse; ``flat``: not significant. ``harm``: at least
    one guardrail harmed after the multiple-testing correction: significantly worse, or, for a
    guardrail with a ``margin``, not shown non-inferior (the interval's bound on the worse side is
    beyond the margin); ``ok``: none.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    win_ok: Decision = Field("ship", description="primary better, no guardrail harmed")
    win_harm: Decision = Field("dont_ship", description="primary better, a guardrail significantly worse")
    flat_ok: Decision = Field("inconclusive", description="primary not significant, no guardrail harmed")
    flat_harm: Decision = Field("dont_ship", description="primary not significant, a guardrail worse")
    loss: Decision = Field("dont_ship", description="primary significantly worse")

    def decide(self, primary: Literal["win", "flat", "loss"], guardrail_harm: bool) -> Decision:
        """The pre-registered decision for an outcome."""
        if primary == "loss":
            return self.loss
        return getattr(self, f"{primary}_{'harm' if guardrail_harm else 'ok'}")


class DesignSpec(BaseModel):
    """What the experimenter fixes before the test starts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, description="experiment name, shown in reports")
    hypothesis: str = Field(min_length=1, description="what should change and why, written before the test")
    primary: MetricSpec = Field(description="the one metric the decision rests on (a MetricSpec table)")
    guardrails: tuple[MetricSpec, ...] = Field((), description="metrics that must not get worse")
    segments: tuple[str, ...] = Field((), description="event-log columns to break the primary metric down by")
    unit: str = Field("user", description="unit of randomisation")
    allow_non_user_unit: bool = Field(
        False, description="accept a unit other than the user (one user in both arms)"
    )
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5, description="two-sided significance level")
    power: float = Field(
        default=0.8, gt=0.5, lt=1.0, description="probability of detecting an effect of size mde"
    )
    variants: dict[str, float] = Field(
        default_factory=lambda: {"control": 0.5, "treatment": 0.5},
        description="variant name -> traffic share (positive, summing to 1)",
    )
    control: str = Field("control", description="the variant the others are compared with")
    traffic: float = Field(default=1.0, gt=0.0, le=1.0, description="share of all units entering the test")
    mde: float = Field(gt=0.0, description="minimum detectable effect of the primary metric")
    mde_relative: bool = Field(True, description="mde relative to the baseline (0.02 = +2%) or absolute")
    cuped: bool = Field(False, description="variance reduction with the pre-period metric (CUPED)")
    pre_weeks: int = Field(default=2, ge=1, description="CUPED: weeks of history before the test used")
    max_weeks: int = Field(
        default=8, ge=1, le=MAX_WEEKS, description="longest acceptable duration; longer is infeasible"
    )
    sequential: Literal["none", "msprt", "spending"] = Field(
        "none", description="daily looks: none (one look at the end), msprt, or re-randomised spending test"
    )
    correction: Literal["holm", "bh"] = Field(
        "holm",
        description="multiple-testing correction over guardrails: Holm (FWER) or Benjamini-Hochberg (FDR)",
    )
    decision: DecisionRule = Field(DecisionRule(), description="decision per outcome (a DecisionRule table)")

    @model_validator(mode="after")
    def _check(self) -> DesignSpec:
        if self.control not in self.variants or len(self.variants) < 2:
            raise ValueError(
                f"variants {list(self.variants)} must include control {self.control!r} and a treatment"
            )
        if abs(sum(self.variants.values()) - 1.0) > 1e-6 or min(self.variants.values()) <= 0:
            raise ValueError(f"variant shares must be positive and sum to 1, got {self.variants}")
        if self.primary.kind == "quantile":
            raise ValueError(
                "the primary metric cannot be a quantile (no closed-form power); use mean/proportion/ratio"
            )
        if self.primary.margin is not None:
            raise ValueError(
                f"primary '{self.primary.name}' has a margin: non-inferiority margins are for guardrails; "
                "the primary is tested for superiority"
            )
        names = [self.primary.name, *(g.name for g in self.guardrails)]
        if len(set(names)) != len(names):
            raise ValueError(f"metric names must be unique, got {names}")
        if self.unit != "user" and not self.allow_non_user_unit:
            raise ValueError(
                f"unit={self.unit!r}: randomising by anything but the user puts one user in both arms and "
                "breaks independence; set allow_non_user_unit=true only if you know why"
            )
        return self


class WeekPlan(BaseModel):
    """Sample size and sensitivity if the test runs ``weeks`` whole weeks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weeks: int
    units: float
    baseline: float
    sd: float
    required_units: float = Field(description="units the test that runs needs (sequential if planned)")
    fixed_units: float = Field(description="units a single look at the end would need")
    inflation: float = Field(1.0, description="required_units / fixed_units (sequential inflation factor)")
    mde_absolute: float
    achievable_mde: float
    power: float = Field(description="power of the test that runs at the MDE")
    extrapolated: bool


class HistoryEstimate(BaseModel):
    """What the historical log says: user growth fit, CUPED correlation and per-week statistics."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    history_days: int
    users_a: float
    users_b: float
    growth: Literal["power", "saturating"] = "power"
    growth_params: tuple[float, ...] = ()
    backtest_error: float | None = None
    rho: float | None
    daily_drift: tuple[float, ...] = Field(
        (), description="sequential designs: z drift per unit relative lift on each day of the test"
    )
    daily_se: tuple[float, ...] = Field(
        (), description="sequential designs: standard error per unit absolute effect on each day"
    )
    daily_corr: tuple[tuple[float, ...], ...] = Field(
        (), description="sequential designs: correlation of the daily z statistics over the history's days"
    )


class Design(BaseModel):
    """A frozen, saved design: the spec plus the plan computed from history."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = DESIGN_SCHEMA_VERSION
    created_at: float
    spec: DesignSpec
    history: HistoryEstimate
    weeks: tuple[WeekPlan, ...]
    duration_weeks: int | None
    feasible: bool
    sized_for: str = Field(description="the test whose power the plan promises")
    message: str

    def save(self, path: str | Path) -> None:
        """Write the design as JSON."""
        Path(path).write_text(self.model_dump_json(indent=2))

    def planned_users(self, days: np.ndarray) -> np.ndarray:
        """Expected cumulative distinct users in the experiment after ``days`` days."""
        return self.spec.traffic * _growth(self.history, np.asarray(days, dtype=np.float64))

    @property
    def mde_absolute(self) -> float:
        """Absolute MDE at the planned duration (or at ``max_weeks`` if infeasible)."""
        return self.weeks[(self.duration_weeks or len(self.weeks)) - 1].mde_absolute


def load_design(path: str | Path) -> Design:
    """Read a design saved by :meth:`Design.save`, checking its schema version."""
    try:
        design = Design.model_validate_json(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read design {path}: {exc}; create one with `vitrina ab design`") from exc
    if design.schema_version != DESIGN_SCHEMA_VERSION:
        raise ConfigError(
            f"design {path} has schema_version {design.schema_version}, expected {DESIGN_SCHEMA_VERSION}"
        )
    return design


def _z(alpha: float, power: float) -> float:
    return float(sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power))


def _share_factor(variants: dict[str, float], control: str) -> float:
    """1/w_c + 1/w_t for the smallest treatment arm (the least powered comparison)."""
    return 1 / variants[control] + 1 / min(v for k, v in variants.items() if k != control)


def h1_share_factor(variants: dict[str, float], control: str, lift: float) -> float:
    """``1/w_c + (1 + |lift|)^2 / w_t`` for the smallest treatment arm: the treatment's variance grows
    with its mean under a relative ``lift`` (the larger of +lift and -lift, so never under-sized).

    >>> round(h1_share_factor({"control": 0.5, "treatment": 0.5}, "control", 0.1), 2)
    4.42
    """
    return 1 / variants[control] + (1 + abs(lift)) ** 2 / min(v for k, v in variants.items() if k != control)


def _reach_with_lift(
    units: float, sd: float, baseline: float, spec: DesignSpec, inflation: float = 1.0
) -> float:
    """Smallest absolute effect detectable when the treatment's sd scales with its mean: the positive
    root of ``m^2 = K (1/w_c + (1 + m/b)^2 / w_t)``, ``K = inflation (z_a + z_b)^2 sd^2 / units`` (inf
    if none); ``inflation`` is a sequential test's factor (its drift is ``sqrt(inflation)`` times)."""
    if baseline == 0:
        factor = _share_factor(spec.variants, spec.control)
        return achievable_mde(units, sd, spec.alpha, spec.power, factor) * math.sqrt(inflation)
    w_c = spec.variants[spec.control]
    w_t = min(v for k, v in spec.variants.items() if k != spec.control)
    k = inflation * _z(spec.alpha, spec.power) ** 2 * sd * sd / units
    b = abs(baseline)
    a = 1 - k / (w_t * b * b)
    if a <= 0:
        return math.inf
    half_b = k / (w_t * b)
    return (half_b + math.sqrt(half_b * half_b + a * k * (1 / w_c + 1 / w_t))) / a


def required_units(mde: float, sd: float, alpha: float, power: float, share_factor: float = 4.0) -> float:
    """Total units (all arms) to detect an absolute ``mde`` with per-unit standard deviation ``sd``.

    ``share_factor`` is ``1/w_c + 1/w_t`` (4 for 50/50).

    >>> round(required_units(0.1, 1.0, 0.05, 0.8))
    3140
    """
    return _z(alpha, power) ** 2 * sd * sd * share_factor / (mde * mde)


def achievable_mde(units: float, sd: float, alpha: float, power: float, share_factor: float = 4.0) -> float:
    """Smallest absolute effect detectable with ``units`` in total (inverse of :func:`required_units`)."""
    return _z(alpha, power) * sd * math.sqrt(share_factor / units)


def power_at(effect: float, units: float, sd: float, alpha: float, share_factor: float = 4.0) -> float:
    """Two-sided power of the z-test for an absolute ``effect`` with ``units`` in total."""
    se = sd * math.sqrt(share_factor / units)
    z = float(sps.norm.ppf(1 - alpha / 2))
    return float(sps.norm.cdf(effect / se - z) + sps.norm.cdf(-effect / se - z))


def _arm_shares(variants: dict[str, float], control: str) -> tuple[float, float]:
    """Shares of the control and of the smallest treatment arm, renormalised to the pair."""
    w_c, w_t = variants[control], min(v for k, v in variants.items() if k != control)
    return w_c / (w_c + w_t), w_t / (w_c + w_t)


def proportion_units(
    baseline: float, mde: float, alpha: float, power: float, w_c: float = 0.5, w_t: float = 0.5
) -> float:
    """Total units (of the pair of arms) for the pooled two-proportion test to detect ``mde`` (absolute).

    Uses the pooled variance under H0 and the two arms' own variances under H1::

        N = (z_a sqrt(pbar qbar (1/w_c + 1/w_t)) + z_b sqrt(p_c q_c / w_c + p_t q_t / w_t))^2 / mde^2

    with ``p_t = baseline + mde``; the larger of +mde and -mde (where valid) is returned. Using the
    baseline's p(1-p) for both arms under-sized tests at low baselines (12.9% too few at p = 1%).

    >>> round(proportion_units(0.01, 0.003, 0.05, 0.8))
    39653
    """
    z_a, z_b = float(sps.norm.ppf(1 - alpha / 2)), float(sps.norm.ppf(power))
    sizes = []
    for delta in (mde, -mde):
        p_t = baseline + delta
        if not 0.0 < p_t < 1.0:
            continue
        p_bar = w_c * baseline + w_t * p_t
        h0 = math.sqrt(p_bar * (1 - p_bar) * (1 / w_c + 1 / w_t))
        h1 = math.sqrt(baseline * (1 - baseline) / w_c + p_t * (1 - p_t) / w_t)
        sizes.append((z_a * h0 + z_b * h1) ** 2 / (delta * delta))
    if not sizes:
        raise DataValidationError(f"an absolute MDE of {mde} moves the baseline {baseline} outside (0, 1)")
    return max(sizes)


def proportion_power(
    baseline: float, effect: float, units: float, alpha: float, w_c: float = 0.5, w_t: float = 0.5
) -> float:
    """Power of the pooled two-proportion test for an absolute ``effect`` with ``units`` in the pair."""
    p_t = min(max(baseline + effect, 1e-12), 1 - 1e-12)
    p_bar = w_c * baseline + w_t * p_t
    z_a = float(sps.norm.ppf(1 - alpha / 2))
    h0 = math.sqrt(p_bar * (1 - p_bar) * (1 / w_c + 1 / w_t))
    h1 = math.sqrt(baseline * (1 - baseline) / w_c + p_t * (1 - p_t) / w_t)
    shift = abs(p_t - baseline) * math.sqrt(units)
    return float(sps.norm.cdf((shift - z_a * h0) / h1) + sps.norm.cdf((-shift - z_a * h0) / h1))


def _proportion_mde(
    baseline: float, units: float, alpha: float, power: float, w_c: float, w_t: float
) -> float:
    """Smallest absolute lift the proportion test detects with ``power`` (bisection on the power)."""
    lo, hi = 0.0, 1.0 - baseline
    if proportion_power(baseline, hi, units, alpha, w_c, w_t) < power:
        return math.inf
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if proportion_power(baseline, mid, units, alpha, w_c, w_t) < power else (lo, mid)
    return hi


def _unit_stats(values: pl.DataFrame, metric: MetricSpec) -> tuple[float, float, np.ndarray]:
    """Baseline, per-unit sd (linearised for ratios) and the per-unit linearised values."""
    num = values[NUM].to_numpy()
    if metric.kind == "ratio":
        den = values[DEN].to_numpy()
        if den.mean() <= 0:
            raise DataValidationError(
                f"metric '{metric.name}': denominator event '{metric.denominator_event}' "
                "never occurs in the history log"
            )
        ratio = num.mean() / den.mean()
        lin = (num - ratio * den) / den.mean()
        return float(ratio), float(lin.std(ddof=1)), lin
    return float(num.mean()), float(num.std(ddof=1)), num


def _power(d: np.ndarray, a: float, b: float) -> np.ndarray:
    return a * d**b


def _saturating(d: np.ndarray, n: float, alpha: float, beta: float, c: float) -> np.ndarray:
    """Returning users of a finite population with gamma-distributed visit rates, plus a constant
    inflow of new ones: n (1 - (1 + d / beta)^-alpha) + c d."""
    return n * (1 - (1 + d / beta) ** -alpha) + c * d


def _growth(history: HistoryEstimate, days: np.ndarray) -> np.ndarray:
    if history.growth == "saturating":
        return _saturating(days, *history.growth_params)
    return _power(days, history.users_a, history.users_b)


def _fit_power(days: np.ndarray, users: np.ndarray) -> tuple[float, float]:
    """users = a * days**b by a least-squares line in log-log space."""
    b, log_a = np.polyfit(np.log(days), np.log(users), 1)
    return float(np.exp(log_a)), float(b)


def _fit_curve(kind: str, days: np.ndarray, users: np.ndarray) -> tuple[float, ...] | None:
    """Least-squares fit of a growth curve (the saturating one from several starting points, keeping
    the best); None if no saturating fit converges."""
    if kind == "power":
        return _fit_power(days, users)
    top = float(users[-1])
    late_slope = float(users[-1] - users[max(0, users.size - 8)]) / min(7, users.size - 1)
    span = float(days[-1])
    best: tuple[float, tuple[float, ...]] | None = None
    starts = itertools.product((0.5, 1.0, 3.0), (span / 4, span, 4 * span), (0.0, late_slope / 2))
    for alpha, beta, c in starts:
        try:
            params, _ = optimize.curve_fit(
                _saturating,
                days,
                users,
                p0=(2 * top, alpha, beta, c),
                bounds=([top * 0.5, 1e-3, 1e-3, 0.0], [top * 1e3, 1e3, 1e5, top]),
                sigma=np.sqrt(np.maximum(users, 1.0)),
                maxfev=5_000,
            )
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((_saturating(days, *params) - users) ** 2 / np.maximum(users, 1.0)))
        if best is None or sse < best[0]:
            best = (sse, tuple(float(x) for x in params))
    return None if best is None else best[1]


def _predict(kind: str, params: tuple[float, ...], days: np.ndarray) -> np.ndarray:
    return _power(days, *params) if kind == "power" else _saturating(days, *params)


def _fit_users(
    history: pl.DataFrame, start: float
) -> tuple[Literal["power", "saturating"], tuple[float, ...], float | None, tuple[float, float]]:
    """Fit cumulative distinct users by day since ``start`` with a power law and with a saturating
    (finite population of returning users + new-user inflow) curve, and pick by backtest.

    Backtest: fit on the first two thirds of the days, predict the rest; the model with the smaller
    largest relative error on the held-out days wins and is refitted on all days. Returns the model,
    its parameters, its backtest error (None with fewer than 9 days) and the power-law (a, b).
    """
    first_day = (
        history.group_by(UNIT_ID)
        .agg(((pl.col(TIMESTAMP).min() - start) // _DAY).cast(pl.Int64).alias("day"))
        .group_by("day")
        .len()
        .sort("day")
    )
    days = np.arange(1, int(first_day["day"].max()) + 2, dtype=np.float64)
    new = np.zeros(days.size)
    new[first_day["day"].to_numpy()] = first_day["len"].to_numpy()
    cumulative = np.cumsum(new)
    power = _fit_power(days, cumulative)
    if days.size < 9:
        return "power", power, None, (power[0], power[1])
    cut = (2 * days.size) // 3
    errors: dict[str, float] = {}
    for kind in ("power", "saturating"):
        params = _fit_curve(kind, days[:cut], cumulative[:cut])
        if params is not None:
            predicted = _predict(kind, params, days[cut:])
            errors[kind] = float(np.max(np.abs(predicted / cumulative[cut:] - 1)))
    if errors.get("saturating", np.inf) < errors.get("power", np.inf):
        full = _fit_curve("saturating", days, cumulative)
        if full is not None:
            return "saturating", full, errors["saturating"], power
    return "power", power, errors.get("power"), power


_CORR_UNITS = 50_000  # units sampled from the history for the day-to-day correlation of z


def _history_days(
    spec: DesignSpec, window_log: pl.DataFrame, start: float, n_days: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per history day d (at most ``n_days``): the primary's baseline and per-unit sd over the first d
    days, and the correlation of the day-d and day-k z statistics of a test on those units.

    Units enter on their first event. A unit's (linearised, for ratios) value at day k is its
    cumulative metric; with ``Y_d`` those values over the units present at d (``n_d`` of them),
    ``corr(Z_j, Z_k) = cov(Y_j, Y_k) sqrt(n_j / n_k) / sqrt(var Y_j var Y_k)`` for j <= k (units
    present at j are present at k). At most ``_CORR_UNITS`` units, sampled with a fixed seed.
    """
    history_days = min(n_days, int((float(window_log[TIMESTAMP].max()) - start) // _DAY) + 1)
    log = window_log.filter(pl.col(TIMESTAMP) < start + history_days * _DAY)
    units = log.group_by(UNIT_ID).agg(((pl.col(TIMESTAMP).min() - start) // _DAY).alias("_day"))
    if units.height > _CORR_UNITS:
        units = units.sample(_CORR_UNITS, seed=0)
    units = units.sort(UNIT_ID)
    present = units["_day"].to_numpy()[:, None] < np.arange(1, history_days + 1)
    num = np.empty(present.shape)
    den = np.empty(present.shape) if spec.primary.kind == "ratio" else None
    for day in range(history_days):
        values = per_unit(log.filter(pl.col(TIMESTAMP) < start + (day + 1) * _DAY), spec.primary, units)
        num[:, day] = values[NUM].to_numpy()
        if den is not None:
            den[:, day] = values[DEN].to_numpy()
    n = present.sum(axis=0).astype(np.float64)
    safe = np.maximum(n, 1.0)
    mean = (num * present).sum(axis=0) / safe
    y, baseline = num, mean
    if den is not None:
        mean_den = (den * present).sum(axis=0) / safe
        baseline = np.where(mean_den > 0, mean / np.where(mean_den > 0, mean_den, 1.0), 0.0)
        y = (num - baseline * den) / np.where(mean_den > 0, mean_den, 1.0)
    centred = (y - (y * present).sum(axis=0) / safe) * present
    cov = centred.T @ y / safe[:, None]  # row j: covariances over the units present at day j
    var = np.diag(cov) * n / np.maximum(n - 1, 1.0)
    sd = np.sqrt(np.maximum(var, 0.0))
    if spec.primary.kind == "proportion":
        sd = np.sqrt(np.clip(baseline * (1 - baseline), 0.0, None))
    v = np.diag(cov)
    ok = (n >= 2) & (v > 0)
    upper = np.triu(
        cov * np.sqrt(np.outer(n, 1 / safe)) / np.sqrt(np.outer(np.maximum(v, 1e-300), np.maximum(v, 1e-300)))
    )
    corr = np.where(np.outer(ok, ok), upper + np.triu(upper, 1).T, 0.0)
    np.fill_diagonal(corr, 1.0)
    return np.where(n >= 2, baseline, 0.0), np.where(n >= 2, sd, 0.0), corr


def _daily_looks(
    spec: DesignSpec, window_log: pl.DataFrame, start: float, units_by_day: np.ndarray, factor: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per test day d = 1..7 * max_weeks: z drift per unit relative lift, SE per unit absolute effect,
    and (history days only) the correlation of the daily z statistics (:func:`_history_days`).

    Beyond the history the last day's baseline and sd are kept (as the weekly plan does). Days with
    fewer than 2 units carry no information.
    """
    n_days = units_by_day.size
    baseline, sd, corr = _history_days(spec, window_log, start, n_days)
    baseline = np.r_[baseline, np.full(n_days - baseline.size, baseline[-1])]
    sd = np.r_[sd, np.full(n_days - sd.size, sd[-1])]
    ok = (sd > 0) & (units_by_day >= 2)
    se = np.where(ok, sd * np.sqrt(factor / np.maximum(units_by_day, 1.0)), 0.0)
    effect = np.abs(baseline) if baseline[-1] != 0 else np.ones(n_days)  # a constant relative lift
    drift = np.where(ok, effect / np.where(ok, se, 1.0), 0.0)
    se = np.where(ok, se, 1e6 * se.max())  # no information: mSPRT's threshold is out of reach
    return drift, se, corr


def _sequential_week(
    spec: DesignSpec, drift: np.ndarray, se: np.ndarray, corr: np.ndarray, fixed_power: float
) -> tuple[float, float]:
    """Inflation factor over the fixed-horizon size and power of the sequential test for ``drift.size``
    daily looks, given the fixed-horizon test's power at the same size."""
    test = "spending" if spec.sequential == "spending" else "msprt"
    n_paths = min(20_000, max(2_000, 2_000_000 // drift.size))
    model = LookModel.build(drift, se / se[-1], n_paths=n_paths, seed=0, corr=corr)
    z_a = float(sps.norm.ppf(1 - spec.alpha / 2))
    theta_fixed = z_a + float(sps.norm.ppf(spec.power))
    inflation = (required_drift(test, model, spec.alpha, spec.power) / theta_fixed) ** 2
    theta = z_a + float(sps.norm.ppf(min(max(fixed_power, 1e-12), 1 - 1e-12)))
    return inflation, sequential_power(test, model, theta, spec.alpha)


def _sized_for(spec: DesignSpec, weeks: int) -> str:
    if spec.sequential == "spending":
        return f"re-randomised |Z| spending test, {7 * weeks} daily looks"
    if spec.sequential == "msprt":
        return f"mSPRT, {7 * weeks} daily looks"
    return "fixed horizon, one look at the end"


def plan(spec: DesignSpec, history: pl.DataFrame) -> Design:
    """Estimate variance, baseline and user growth from ``history`` and size the test in whole weeks.

    ``history`` is an event log (``unit_id``, ``timestamp``, ``event``, ``value``; experiment columns are
    not needed) from before the test. With ``spec.cuped`` its first ``pre_weeks`` weeks are the
    pre-period for the covariate and the windows start after them. A sequential design is sized for
    its daily-looks test (see the module docstring) and says so in ``sized_for`` and its message.
    """
    if spec.unit != "user":
        warnings.warn(
            f"design '{spec.name}' randomises by {spec.unit!r}, not by user: one user can be in both arms "
            "and unit-level tests then understate the variance; prefer unit='user'",
            NonUserUnitWarning,
            stacklevel=2,
        )
    history = validate_history(history, source="history log")
    if history.height == 0:
        raise DataValidationError("history log is empty; pass events from before the test")
    t0 = float(history[TIMESTAMP].min())
    total_days = int((float(history[TIMESTAMP].max()) - t0) // _DAY) + 1
    pre_days = 7 * spec.pre_weeks if spec.cuped else 0
    if total_days - pre_days < 7:
        raise DataValidationError(
            f"history covers {total_days} days; need at least {pre_days + 7} "
            f"(pre-period {pre_days} days + 1 week)"
        )
    start = t0 + pre_days * _DAY
    window_log = history.filter(pl.col(TIMESTAMP) >= start)
    growth, growth_params, backtest, (users_a, users_b) = _fit_users(window_log, start)
    fitted = HistoryEstimate(
        history_days=total_days,
        users_a=users_a,
        users_b=users_b,
        rho=None,
        growth=growth,
        growth_params=growth_params,
        backtest_error=backtest,
    )
    history_weeks = (total_days - pre_days) // 7
    pre_log = history.filter(pl.col(TIMESTAMP) < start)
    factor = _share_factor(spec.variants, spec.control)
    cuped = spec.cuped and spec.primary.kind != "ratio" and spec.sequential == "none"
    rhos: list[float] = []
    measured: list[tuple[float, float]] = []
    for weeks in range(1, min(history_weeks, spec.max_weeks) + 1):
        window = window_log.filter(pl.col(TIMESTAMP) < start + 7 * weeks * _DAY)
        units = window.select(UNIT_ID).unique(maintain_order=True)
        baseline, sd, lin = _unit_stats(per_unit(window, spec.primary, units), spec.primary)
        if spec.primary.kind == "proportion":
            sd = math.sqrt(baseline * (1 - baseline))
        if cuped:
            _, _, pre = _unit_stats(per_unit(pre_log, spec.primary, units), spec.primary)
            rho = float(np.corrcoef(lin, pre)[0, 1]) if pre.std() > 0 else 0.0
            rhos.append(rho)
            sd *= math.sqrt(max(0.0, 1 - rho * rho))
        if sd <= 0 or (spec.mde_relative and baseline == 0):
            raise DataValidationError(
                f"metric '{spec.primary.name}' has baseline {baseline} and per-unit sd {sd} in the first "
                f"{weeks} week(s) of history; check the event name '{spec.primary.event}' or use an "
                "absolute MDE"
            )
        measured.append((baseline, sd))
    exact_proportion = spec.primary.kind == "proportion" and not cuped
    days = np.arange(1, 7 * spec.max_weeks + 1, dtype=np.float64)
    units_by_day = _growth(fitted, days) * spec.traffic
    if spec.sequential != "none":
        daily_drift, daily_se, daily_corr = _daily_looks(spec, window_log, start, units_by_day, factor)
        fitted = fitted.model_copy(
            update={
                "daily_drift": tuple(daily_drift.tolist()),
                "daily_se": tuple(daily_se.tolist()),
                "daily_corr": tuple(tuple(row) for row in daily_corr.tolist()),
            }
        )
    w_c, w_t = _arm_shares(spec.variants, spec.control)
    pair_share = spec.variants[spec.control] + min(v for k, v in spec.variants.items() if k != spec.control)
    plans: list[WeekPlan] = []
    for weeks in range(1, spec.max_weeks + 1):
        baseline, sd = measured[min(weeks, len(measured)) - 1]
        n_units = float(_growth(fitted, np.array([7.0 * weeks]))[0]) * spec.traffic
        mde_abs = spec.mde * abs(baseline) if spec.mde_relative else spec.mde
        lift = mde_abs / abs(baseline) if baseline else 0.0
        h1_factor = h1_share_factor(spec.variants, spec.control, lift)
        if exact_proportion:  # unpooled variance under H1 (issue 13, point 4); sizes are of the pair of arms
            n_pair = n_units * pair_share
            need = proportion_units(baseline, mde_abs, spec.alpha, spec.power, w_c, w_t) / pair_share
            reach = _proportion_mde(baseline, n_pair, spec.alpha, spec.power, w_c, w_t)
            pw = proportion_power(baseline, mde_abs, n_pair, spec.alpha, w_c, w_t)
        else:
            need = required_units(mde_abs, sd, spec.alpha, spec.power, h1_factor)
            reach = _reach_with_lift(n_units, sd, baseline, spec)
            pw = power_at(mde_abs, n_units, sd, spec.alpha, h1_factor)
        inflation = 1.0
        if spec.sequential != "none":
            looks = 7 * weeks
            inflation, pw = _sequential_week(
                spec, daily_drift[:looks], daily_se[:looks], daily_corr[:looks, :looks], pw
            )
            if exact_proportion:
                reach *= math.sqrt(inflation)
            else:
                reach = _reach_with_lift(n_units, sd, baseline, spec, inflation)
        plans.append(
            WeekPlan(
                weeks=weeks,
                units=n_units,
                baseline=baseline,
                sd=sd,
                required_units=need * inflation,
                fixed_units=need,
                inflation=inflation,
                mde_absolute=mde_abs,
                achievable_mde=reach,
                power=pw,
                extrapolated=weeks > history_weeks,
            )
        )
    ok = [p for p in plans if p.units >= p.required_units]
    sized_for = _sized_for(spec, ok[0].weeks if ok else spec.max_weeks)
    mde_text = f"{spec.mde:.3g}{' relative' if spec.mde_relative else ' absolute'}"
    if ok:
        weeks = ok[0].weeks
        p = ok[0]
        message = (
            f"run {weeks} week(s): ~{p.units:,.0f} units expected, {p.required_units:,.0f} needed for MDE "
            f"{mde_text} ({p.mde_absolute:.4g} absolute) at power {spec.power:.0%}, alpha {spec.alpha}"
        )
        if spec.sequential != "none":
            message += (
                f"; sized for the {sized_for} ({p.inflation:.2f}x the {p.fixed_units:,.0f} units of one "
                "look at the end)"
            )
        if p.extrapolated:
            message += "; per-unit variance extrapolated beyond the history window"
    else:
        worst = plans[-1]
        message = (
            f"INFEASIBLE: MDE {mde_text} cannot be reached within {spec.max_weeks} weeks: after "
            f"{spec.max_weeks} weeks ~{worst.units:,.0f} units are expected but {worst.required_units:,.0f} "
            f"are needed; the smallest detectable effect is {worst.achievable_mde:.4g} absolute. Raise "
            "traffic, the MDE or the variance reduction (cuped), or pick a more sensitive metric"
        )
        if spec.sequential != "none":
            message += f" (sized for the {sized_for})"
    if backtest is not None:
        message += (
            f"; units forecast by a {growth} growth curve (backtest on the history: largest error "
            f"{backtest:.1%} on the last third of its days)"
        )
    if spec.cuped and spec.primary.kind != "ratio" and spec.sequential != "none":
        message += (
            "; CUPED is not applied to the daily looks of a sequential design, so the plan assumes no "
            "variance reduction"
        )
    if spec.cuped and spec.primary.kind == "ratio":
        message += (
            "; CUPED is not applied to ratio metrics (the analysis uses the plain delta method), so the "
            "plan assumes no variance reduction"
        )
    return Design(
        created_at=time.time(),
        spec=spec,
        history=fitted.model_copy(update={"rho": float(np.mean(rhos)) if rhos else None}),
        weeks=tuple(plans),
        duration_weeks=ok[0].weeks if ok else None,
        feasible=bool(ok),
        sized_for=sized_for,
        message=message,
    )


def plot_power_curve(design: Design, path: str | Path) -> Path:
    """PNG with power vs duration for the target MDE, and power vs effect at the planned duration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = design.spec
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    weeks = [p.weeks for p in design.weeks]
    left.plot(weeks, [p.power for p in design.weeks], marker="o")
    left.axhline(spec.power, color="grey", linestyle="--", label=f"target power {spec.power:.0%}")
    test_name = design.sized_for.split(",")[0]
    left.set(
        xlabel="duration (weeks)",
        ylabel=f"power at the MDE ({test_name})",
        ylim=(0, 1.02),
        title="Power vs duration",
    )
    left.legend()
    chosen = design.weeks[(design.duration_weeks or len(design.weeks)) - 1]
    effects = np.linspace(0, 2.5 * chosen.mde_absolute, 100)
    lifts = effects / abs(chosen.baseline) if chosen.baseline else np.zeros_like(effects)
    fixed = [
        power_at(e, chosen.units, chosen.sd, spec.alpha, h1_share_factor(spec.variants, spec.control, lift))
        for e, lift in zip(effects, lifts, strict=True)
    ]
    if spec.sequential == "none":
        right.plot(effects, fixed)
    else:
        looks = 7 * chosen.weeks
        se = np.asarray(design.history.daily_se[:looks])
        corr = np.asarray(design.history.daily_corr)[:looks, :looks]
        model = LookModel.build(design.history.daily_drift[:looks], se / se[-1], corr=corr)
        test = "spending" if spec.sequential == "spending" else "msprt"
        tau = chosen.mde_absolute / se[-1]
        right.plot(effects, [sequential_power(test, model, e / se[-1], spec.alpha, tau) for e in effects])
        right.plot(effects, fixed, linestyle=":", label="one look at the end")
    right.axvline(chosen.mde_absolute, color="grey", linestyle="--", label="MDE")
    right.axhline(spec.power, color="grey", linestyle=":")
    right.set(
        xlabel="absolute effect",
        ylabel="power",
        ylim=(0, 1.02),
        title=f"Power vs effect at {chosen.weeks} week(s)",
    )
    right.legend()
    fig.suptitle(f"{spec.name}: {design.message[:90]}", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
