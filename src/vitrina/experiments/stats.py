"""Frozen, summable sufficient statistics per arm and the frequentist tests built on them.

Every field may be a float or a NumPy array of any shape; all tests work element-wise, so one call
analyses thousands of simulated experiments at once (see ``benchmarks/ab_validation.py``).

* :class:`MeanStats` (n, sum, sum of squares about a shift) -> :func:`welch_test`,
  :func:`two_proportion_test`
* :class:`PairStats` (n, sums, sums of squares, cross sum of two per-unit columns, about shifts) ->
  :func:`ratio_test` (delta method on per-unit numerator/denominator) and
  :func:`cuped_test` (metric ``y`` adjusted by pre-period covariate ``x``, theta pooled across arms).

Statistics add with ``+`` (e.g. daily or per-shard partial sums). Sums are kept about a *shift*
(:meth:`MeanStats.from_values` uses the sample mean), so the variance does not lose its digits to
cancellation when the mean is large against the spread (a plain ``sum_sq - sum**2 / n`` has no
correct digit left at mean/sd = 1e8).

Every estimate also carries an interval for the *relative* effect ``treatment / control - 1``
(Fieller's interval for a ratio of independent means; unbounded when the control mean is not
distinguishable from zero).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

__all__ = [
    "SMALL_EXPECTED_COUNT",
    "EffectEstimate",
    "MeanStats",
    "NotEstimable",
    "PairStats",
    "cuped_test",
    "cuped_theta",
    "fieller_relative",
    "noninferiority_p",
    "ratio_test",
    "two_proportion_test",
    "welch_test",
]

Num = float | NDArray[np.float64]


class NotEstimable(ValueError):
    """The data cannot support this estimate (e.g. a constant metric or too few units); the reason says
    why. The analysis reports the metric as not estimable and goes on with the others."""


def _f(x: ArrayLike) -> Num:
    arr = np.asarray(x, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else arr


def _shift_of(v: NDArray[np.float64], axis: int) -> NDArray[np.float64]:
    """Sample mean along ``axis`` (kept as an axis of length 1), 0 for empty input."""
    if v.shape[axis] == 0:
        return np.zeros_like(v.sum(axis=axis, keepdims=True))
    return v.mean(axis=axis, keepdims=True)


def _reshift(n: Num, s: Num, ss: Num, delta: Num) -> tuple[Num, Num]:
    """Sum and sum of squares of ``x - a`` given those of ``x - b`` and ``delta = b - a``."""
    return s + n * delta, ss + 2 * delta * s + n * delta * delta


@dataclass(frozen=True)
class MeanStats:
    """n, sum and sum of squares of one per-unit metric in one arm, about ``shift``.

    ``sum`` and ``sum_sq`` are sums of ``x - shift`` and ``(x - shift)**2``; ``shift = 0`` gives the
    plain sums. Adding two statistics re-expresses the right one about the left one's shift.
    """

    n: Num
    sum: Num
    sum_sq: Num
    shift: Num = 0.0

    def __add__(self, other: MeanStats) -> MeanStats:
        if not isinstance(other, MeanStats):
            return NotImplemented
        s, ss = _reshift(other.n, other.sum, other.sum_sq, other.shift - self.shift)
        return MeanStats(self.n + other.n, self.sum + s, self.sum_sq + ss, self.shift)

    @classmethod
    def from_values(cls, values: ArrayLike, axis: int = -1) -> MeanStats:
        """Statistics of ``values`` along ``axis`` (one unit per entry), about their mean."""
        v = np.asarray(values, dtype=np.float64)
        shift = _shift_of(v, axis)
        d = v - shift
        return cls(
            n=_f(v.shape[axis]),
            sum=_f(d.sum(axis=axis)),
            sum_sq=_f((d * d).sum(axis=axis)),
            shift=_f(np.squeeze(shift, axis=axis)),
        )

    @classmethod
    def from_moments(cls, n: Num, mean: Num, var: Num) -> MeanStats:
        """Statistics with a given mean and unbiased variance (no cancellation: shift = mean)."""
        return cls(n=n, sum=0.0 * n, sum_sq=var * (n - 1), shift=mean)

    @property
    def mean(self) -> Num:
        """Sample mean."""
        return self.shift + self.sum / self.n

    @property
    def var(self) -> Num:
        """Unbiased sample variance (ddof=1)."""
        return (self.sum_sq - self.sum * self.sum / self.n) / (self.n - 1)


@dataclass(frozen=True)
class PairStats:
    """Sufficient statistics of two per-unit columns ``x`` and ``y`` in one arm (incl. the cross sum).

    For a ratio metric ``x`` is the numerator and ``y`` the denominator per unit; for CUPED ``y`` is
    the metric and ``x`` the pre-period covariate. Sums are of ``x - shift_x`` and ``y - shift_y``
    (see :class:`MeanStats`).
    """

    n: Num
    sum_x: Num
    sum_y: Num
    sum_xx: Num
    sum_yy: Num
    sum_xy: Num
    shift_x: Num = 0.0
    shift_y: Num = 0.0

    def __add__(self, other: PairStats) -> PairStats:
        if not isinstance(other, PairStats):
            return NotImplemented
        dx, dy = other.shift_x - self.shift_x, other.shift_y - self.shift_y
        sx, sxx = _reshift(other.n, other.sum_x, other.sum_xx, dx)
        sy, syy = _reshift(other.n, other.sum_y, other.sum_yy, dy)
        sxy = other.sum_xy + dx * other.sum_y + dy * other.sum_x + other.n * dx * dy
        return PairStats(
            self.n + other.n,
            self.sum_x + sx,
            self.sum_y + sy,
            self.sum_xx + sxx,
            self.sum_yy + syy,
            self.sum_xy + sxy,
            self.shift_x,
            self.shift_y,
        )

    @classmethod
    def from_values(cls, x: ArrayLike, y: ArrayLike, axis: int = -1) -> PairStats:
        """Statistics of paired per-unit values along ``axis``, about their means."""
        xa = np.asarray(x, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)
        if xa.shape != ya.shape:
            raise ValueError(f"x and y must have the same shape, got {xa.shape} and {ya.shape}")
        kx, ky = _shift_of(xa, axis), _shift_of(ya, axis)
        dx, dy = xa - kx, ya - ky
        return cls(
            n=_f(xa.shape[axis]),
            sum_x=_f(dx.sum(axis=axis)),
            sum_y=_f(dy.sum(axis=axis)),
            sum_xx=_f((dx * dx).sum(axis=axis)),
            sum_yy=_f((dy * dy).sum(axis=axis)),
            sum_xy=_f((dx * dy).sum(axis=axis)),
            shift_x=_f(np.squeeze(kx, axis=axis)),
            shift_y=_f(np.squeeze(ky, axis=axis)),
        )

    @property
    def mean_x(self) -> Num:
        return self.shift_x + self.sum_x / self.n

    @property
    def mean_y(self) -> Num:
        return self.shift_y + self.sum_y / self.n

    @property
    def cxx(self) -> Num:
        """Centred sum of squares of x."""
        return self.sum_xx - self.sum_x * self.sum_x / self.n

    @property
    def cyy(self) -> Num:
        """Centred sum of squares of y."""
        return self.sum_yy - self.sum_y * self.sum_y / self.n

    @property
    def cxy(self) -> Num:
        """Centred cross sum."""
        return self.sum_xy - self.sum_x * self.sum_y / self.n

    @property
    def y(self) -> MeanStats:
        """Statistics of y alone."""
        return MeanStats(n=self.n, sum=self.sum_y, sum_sq=self.sum_yy, shift=self.shift_y)

    @property
    def x(self) -> MeanStats:
        """Statistics of x alone."""
        return MeanStats(n=self.n, sum=self.sum_x, sum_sq=self.sum_xx, shift=self.shift_x)


@dataclass(frozen=True)
class EffectEstimate:
    """Absolute effect ``treatment - control`` with its standard error, interval and two-sided p-value,
    and an interval for the relative effect ``treatment / control - 1``."""

    control: Num
    treatment: Num
    effect: Num
    se: Num
    ci_low: Num
    ci_high: Num
    p_value: Num
    alpha: float
    rel_ci_low: Num = math.nan
    rel_ci_high: Num = math.nan
    var_control: Num = math.nan  # variance of each arm's estimate (NaN where not separable: bootstrap)
    var_treatment: Num = math.nan

    @property
    def relative(self) -> Num:
        """Point estimate of the relative effect ``effect / control``."""
        return self.effect / self.control


def noninferiority_p(
    estimate: EffectEstimate, margin: float, relative: bool = True, higher_is_better: bool = True
) -> float:
    """p-value of H0 "treatment is worse than control by ``margin`` or more" (non-inferiority).

    Twice the one-sided normal p-value, so that it is below ``alpha`` exactly when the two-sided
    (1 - alpha) interval's bound on the worse side lies inside the margin (the convention of
    CONSORT: non-inferiority at one-sided alpha / 2). An absolute margin tests
    ``effect <= -margin`` (``>= +margin`` when lower is better). A relative margin tests
    ``treatment <= (1 - margin) control`` (``>= (1 + margin) control``) with the standard error of
    ``treatment - k control`` from the arms' variances; where those are not separable (bootstrap
    quantiles) it falls back to the absolute margin ``margin * |control|``.

    >>> e = EffectEstimate(control=1.0, treatment=0.99, effect=-0.01, se=0.01, ci_low=-0.0296,
    ...                    ci_high=0.0096, p_value=0.32, alpha=0.05)
    >>> round(noninferiority_p(e, 0.03, relative=False), 4)  # bound -0.0296 > -0.03: shown
    0.0455
    """
    sign = 1.0 if higher_is_better else -1.0
    c, t = float(estimate.control), float(estimate.treatment)
    vc, vt = float(estimate.var_control), float(estimate.var_treatment)
    if relative and math.isfinite(vc) and math.isfinite(vt):
        k = 1.0 - sign * margin
        stat = sign * (t - k * c) / math.sqrt(vt + k * k * vc)
    else:
        bound = margin * abs(c) if relative else margin
        stat = (sign * float(estimate.effect) + bound) / float(estimate.se)
    return float(min(1.0, 2 * sps.norm.sf(stat))) if math.isfinite(stat) else 1.0


def fieller_relative(control: Num, treatment: Num, var_c: Num, var_t: Num, quantile: Num) -> tuple[Num, Num]:
    """Fieller interval for ``treatment / control - 1`` from independent means and their variances.

    The set {theta : |T - theta C| <= q sqrt(var_t + theta^2 var_c)}; it is unbounded (returned as
    ``(-inf, inf)``) when the control mean is not significantly different from 0 at this level.
    """
    c, t = np.asarray(control, dtype=np.float64), np.asarray(treatment, dtype=np.float64)
    q2 = np.asarray(quantile, dtype=np.float64) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        a = c * c - q2 * var_c
        root = np.sqrt(np.maximum(q2 * (t * t * var_c + c * c * var_t - q2 * var_c * var_t), 0.0))
        lo, hi = (t * c - root) / a - 1, (t * c + root) / a - 1
    bounded = a > 0
    return _f(np.where(bounded, lo, -np.inf)), _f(np.where(bounded, hi, np.inf))


def _estimate(
    control: Num,
    treatment: Num,
    var_c: Num,
    var_t: Num,
    alpha: float,
    dist: Any = sps.norm,
) -> EffectEstimate:
    """Difference ``treatment - control`` with a two-sided test and interval from ``dist`` (the
    normal, or a frozen t for Welch); ``var_c`` and ``var_t`` are the variances of the two means."""
    effect = treatment - control
    se = np.sqrt(var_c + var_t)
    z = dist.ppf(1 - alpha / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * dist.sf(np.abs(effect) / se)
    rel_lo, rel_hi = fieller_relative(control, treatment, var_c, var_t, z)
    return EffectEstimate(
        control=control,
        treatment=treatment,
        effect=effect,
        se=_f(se),
        ci_low=_f(effect - z * se),
        ci_high=_f(effect + z * se),
        p_value=_f(p),
        alpha=alpha,
        rel_ci_low=rel_lo,
        rel_ci_high=rel_hi,
        var_control=_f(var_c),
        var_treatment=_f(var_t),
    )


def welch_test(control: MeanStats, treatment: MeanStats, alpha: float = 0.05) -> EffectEstimate:
    """Welch's unequal-variance t-test on the difference of means (same as ``ttest_ind(equal_var=False)``)."""
    vc = control.var / control.n
    vt = treatment.var / treatment.n
    var = vc + vt
    dof = var * var / (vc * vc / (control.n - 1) + vt * vt / (treatment.n - 1))
    return _estimate(control.mean, treatment.mean, vc, vt, alpha, dist=sps.t(dof))


#: Expected count (any arm, successes or failures) below which the exact test is used.
SMALL_EXPECTED_COUNT = 5.0


def _restricted_mle(p1: NDArray, n1: NDArray, p2: NDArray, n2: NDArray, delta: NDArray) -> tuple:
    """Maximum-likelihood (p1, p2) under ``p1 - p2 = delta`` (Farrington & Manning 1990, closed form)."""
    theta = n2 / n1
    a = 1 + theta
    b = -(1 + theta + p1 + theta * p2 + delta * (theta + 2))
    c = delta * delta + delta * (2 * p1 + theta + 1) + p1 + theta * p2
    d = -p1 * delta * (1 + delta)
    v = b**3 / (27 * a**3) - b * c / (6 * a * a) + d / (2 * a)
    u = np.sign(v) * np.sqrt(np.maximum(b * b / (9 * a * a) - c / (3 * a), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        cos_arg = np.clip(np.where(u == 0, 0.0, v / u**3), -1.0, 1.0)
    w = (np.pi + np.arccos(cos_arg)) / 3
    r1 = np.clip(2 * u * np.cos(w) - b / (3 * a), 0.0, 1.0)
    return r1, np.clip(r1 - delta, 0.0, 1.0)


def _score_z(p1: NDArray, n1: NDArray, p2: NDArray, n2: NDArray, delta: NDArray) -> NDArray:
    r1, r2 = _restricted_mle(p1, n1, p2, n2, delta)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (p1 - p2 - delta) / np.sqrt(r1 * (1 - r1) / n1 + r2 * (1 - r2) / n2)


def _score_interval(p1: NDArray, n1: NDArray, p2: NDArray, n2: NDArray, z: float) -> tuple:
    """All differences ``delta`` the score test does not reject: bisection on each side of the estimate."""
    d = p1 - p2
    eps = 1e-12
    bounds = []
    for far, target in ((-1.0 + eps, z), (1.0 - eps, -z)):
        lo, hi = np.full_like(d, far), d.copy()
        for _ in range(60):
            mid = (lo + hi) / 2
            zm = _score_z(p1, n1, p2, n2, mid)
            outside = zm > z if target > 0 else zm < -z
            lo, hi = np.where(outside, mid, lo), np.where(outside, hi, mid)
        bounds.append((lo + hi) / 2)
    return bounds[0], bounds[1]


def _fisher_p(xc: NDArray, nc: NDArray, xt: NDArray, nt: NDArray) -> NDArray:
    flat = np.broadcast_arrays(xc, nc, xt, nt)
    out = np.empty(flat[0].shape)
    for i in np.ndindex(out.shape):
        a, m, b, k = (round(float(arr[i])) for arr in flat)
        out[i] = sps.fisher_exact([[b, k - b], [a, m - a]]).pvalue
    return out


def two_proportion_test(control: MeanStats, treatment: MeanStats, alpha: float = 0.05) -> EffectEstimate:
    """Difference of proportions of per-unit 0/1 outcomes: score test and the interval that inverts it.

    The p-value is the pooled z-test (the score test at difference 0, as ``statsmodels``
    ``proportions_ztest``); the interval is the set of differences the score test does not reject
    (Farrington-Manning / Miettinen-Nurminen without the N/(N-1) factor, as ``statsmodels``
    ``confint_proportions_2indep(method="score", correction=False)``), so 0 lies outside the
    interval exactly when p < alpha. When an expected cell count (successes or failures in either arm,
    under the pooled proportion) is below :data:`SMALL_EXPECTED_COUNT`, the p-value is Fisher's exact
    test instead (the normal approximation is then far too optimistic); in that regime the score
    interval is still reported and may disagree with the exact p-value near alpha — the decision uses
    the p-value. ``se`` is the unpooled (Wald) standard error.
    """
    pc, pt = np.asarray(control.mean, dtype=np.float64), np.asarray(treatment.mean, dtype=np.float64)
    nc, nt = np.asarray(control.n, dtype=np.float64), np.asarray(treatment.n, dtype=np.float64)
    xc, xt = pc * nc, pt * nt
    pooled = (xc + xt) / (nc + nt)
    z = float(sps.norm.ppf(1 - alpha / 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = (pt - pc) / np.sqrt(pooled * (1 - pooled) * (1 / nc + 1 / nt))
    p = np.where(pooled * (1 - pooled) > 0, 2 * sps.norm.sf(np.abs(stat)), 1.0)
    expected = np.minimum(np.minimum(nc, nt) * pooled, np.minimum(nc, nt) * (1 - pooled))
    small = (expected < SMALL_EXPECTED_COUNT) & (pooled * (1 - pooled) > 0)
    if np.any(small):
        p = np.where(small, _fisher_p(xc, nc, xt, nt), p)
    lo, hi = _score_interval(pt, nt, pc, nc, z)
    vc, vt = pc * (1 - pc) / nc, pt * (1 - pt) / nt
    rel_lo, rel_hi = fieller_relative(pc, pt, vc, vt, z)
    return EffectEstimate(
        control=_f(pc),
        treatment=_f(pt),
        effect=_f(pt - pc),
        se=_f(np.sqrt(vc + vt)),
        ci_low=_f(lo),
        ci_high=_f(hi),
        p_value=_f(p),
        alpha=alpha,
        rel_ci_low=rel_lo,
        rel_ci_high=rel_hi,
        var_control=_f(vc),
        var_treatment=_f(vt),
    )


def _ratio_and_var(s: PairStats) -> tuple[Num, Num]:
    """Ratio sum(x)/sum(y) and its delta-method variance (per-unit numerator x, denominator y)."""
    mx, my = s.mean_x, s.mean_y
    n = s.n
    vxx, vyy, vxy = s.cxx / (n - 1), s.cyy / (n - 1), s.cxy / (n - 1)
    ratio = mx / my
    var = (vxx - 2 * ratio * vxy + ratio * ratio * vyy) / (my * my * n)
    return ratio, var


def ratio_test(control: PairStats, treatment: PairStats, alpha: float = 0.05) -> EffectEstimate:
    """Difference of ratio metrics sum(x)/sum(y) (e.g. clicks / impressions per user) by the delta method.

    Units (users) are the independent observations; impressions are never treated as independent.
    """
    rc, vc = _ratio_and_var(control)
    rt, vt = _ratio_and_var(treatment)
    return _estimate(rc, rt, vc, vt, alpha)


def cuped_theta(control: PairStats, treatment: PairStats) -> Num:
    """theta = cov(y, x) / var(x), pooled across arms from within-arm centred sums."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (control.cxy + treatment.cxy) / (control.cxx + treatment.cxx)


def cuped_test(control: PairStats, treatment: PairStats, alpha: float = 0.05) -> EffectEstimate:
    """CUPED: Welch test on ``y - theta * (x - mean_x)`` with theta pooled across arms.

    ``x`` must be measured before assignment (pre-period), so it is independent of the variant.
    """
    theta = cuped_theta(control, treatment)
    mean_x = (control.sum_x + treatment.sum_x) / (control.n + treatment.n)

    def adjusted(s: PairStats) -> MeanStats:
        mean = s.mean_y - theta * (s.mean_x - mean_x)
        var = (s.cyy - 2 * theta * s.cxy + theta * theta * s.cxx) / (s.n - 1)
        return MeanStats.from_moments(s.n, mean, var)

    return welch_test(adjusted(control), adjusted(treatment), alpha)
