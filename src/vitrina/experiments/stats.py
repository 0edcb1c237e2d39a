"""Frozen, summable sufficient statistics per arm and the frequentist tests built on them.

Every field may be a float or a NumPy array of any shape; all tests work element-wise, so one call
analyses thousands of simulated experiments at once (see ``benchmarks/ab_validation.py``).

* :class:`MeanStats` (n, sum, sum of squares) -> :func:`welch_test`, :func:`two_proportion_test`
* :class:`PairStats` (n, sums, sums of squares, cross sum of two per-unit columns) ->
  :func:`ratio_test` (delta method on per-unit numerator/denominator) and
  :func:`cuped_test` (metric ``y`` adjusted by pre-period covariate ``x``, theta pooled across arms).

Statistics add with ``+`` (e.g. daily or per-shard partial sums).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

__all__ = [
    "EffectEstimate",
    "MeanStats",
    "PairStats",
    "cuped_test",
    "cuped_theta",
    "ratio_test",
    "two_proportion_test",
    "welch_test",
]

Num = float | NDArray[np.float64]


def _f(x: ArrayLike) -> Num:
    arr = np.asarray(x, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else arr


@dataclass(frozen=True)
class _Summable:
    def __add__(self, other: Self) -> Self:
        if type(other) is not type(self):
            return NotImplemented
        return type(self)(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


@dataclass(frozen=True)
class MeanStats(_Summable):
    """n, sum and sum of squares of one per-unit metric in one arm."""

    n: Num
    sum: Num
    sum_sq: Num

    @classmethod
    def from_values(cls, values: ArrayLike, axis: int = -1) -> MeanStats:
        """Statistics of ``values`` along ``axis`` (one unit per entry)."""
        v = np.asarray(values, dtype=np.float64)
        return cls(n=_f(v.shape[axis]), sum=_f(v.sum(axis=axis)), sum_sq=_f((v * v).sum(axis=axis)))

    @property
    def mean(self) -> Num:
        """Sample mean."""
        return self.sum / self.n

    @property
    def var(self) -> Num:
        """Unbiased sample variance (ddof=1)."""
        return (self.sum_sq - self.sum * self.sum / self.n) / (self.n - 1)


@dataclass(frozen=True)
class PairStats(_Summable):
    """Sufficient statistics of two per-unit columns ``x`` and ``y`` in one arm (incl. the cross sum).

    For a ratio metric ``x`` is the numerator and ``y`` the denominator per unit; for CUPED ``y`` is
    the metric and ``x`` the pre-period covariate.
    """

    n: Num
    sum_x: Num
    sum_y: Num
    sum_xx: Num
    sum_yy: Num
    sum_xy: Num

    @classmethod
    def from_values(cls, x: ArrayLike, y: ArrayLike, axis: int = -1) -> PairStats:
        """Statistics of paired per-unit values along ``axis``."""
        xa = np.asarray(x, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)
        if xa.shape != ya.shape:
            raise ValueError(f"x and y must have the same shape, got {xa.shape} and {ya.shape}")
        return cls(
            n=_f(xa.shape[axis]),
            sum_x=_f(xa.sum(axis=axis)),
            sum_y=_f(ya.sum(axis=axis)),
            sum_xx=_f((xa * xa).sum(axis=axis)),
            sum_yy=_f((ya * ya).sum(axis=axis)),
            sum_xy=_f((xa * ya).sum(axis=axis)),
        )

    @property
    def mean_x(self) -> Num:
        return self.sum_x / self.n

    @property
    def mean_y(self) -> Num:
        return self.sum_y / self.n

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
        return MeanStats(n=self.n, sum=self.sum_y, sum_sq=self.sum_yy)

    @property
    def x(self) -> MeanStats:
        """Statistics of x alone."""
        return MeanStats(n=self.n, sum=self.sum_x, sum_sq=self.sum_xx)


@dataclass(frozen=True)
class EffectEstimate:
    """Absolute effect ``treatment - control`` with its standard error, interval and two-sided p-value."""

    control: Num
    treatment: Num
    effect: Num
    se: Num
    ci_low: Num
    ci_high: Num
    p_value: Num
    alpha: float

    @property
    def relative(self) -> Num:
        """Point estimate of the relative effect ``effect / control``."""
        return self.effect / self.control


def _estimate(
    control: Num,
    treatment: Num,
    var: Num,
    alpha: float,
    p_se: Num | None = None,
    dist: Any = sps.norm,
) -> EffectEstimate:
    """Difference ``treatment - control`` with a two-sided test and interval from ``dist`` (the
    normal, or a frozen t for Welch); ``p_se`` is the standard error under H0 if it differs."""
    effect = treatment - control
    se = np.sqrt(var)
    z = dist.ppf(1 - alpha / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * dist.sf(np.abs(effect) / (se if p_se is None else p_se))
    return EffectEstimate(
        control=control,
        treatment=treatment,
        effect=effect,
        se=_f(se),
        ci_low=_f(effect - z * se),
        ci_high=_f(effect + z * se),
        p_value=_f(p),
        alpha=alpha,
    )


def welch_test(control: MeanStats, treatment: MeanStats, alpha: float = 0.05) -> EffectEstimate:
    """Welch's unequal-variance t-test on the difference of means (same as ``ttest_ind(equal_var=False)``)."""
    vc = control.var / control.n
    vt = treatment.var / treatment.n
    var = vc + vt
    dof = var * var / (vc * vc / (control.n - 1) + vt * vt / (treatment.n - 1))
    return _estimate(control.mean, treatment.mean, var, alpha, dist=sps.t(dof))


def two_proportion_test(control: MeanStats, treatment: MeanStats, alpha: float = 0.05) -> EffectEstimate:
    """Two-proportion z-test of per-unit 0/1 outcomes.

    The p-value uses the pooled proportion (as ``statsmodels`` ``proportions_ztest``), the interval the
    unpooled (Wald) standard error.
    """
    pc, pt = control.mean, treatment.mean
    pooled = (control.sum + treatment.sum) / (control.n + treatment.n)
    p_se = np.sqrt(pooled * (1 - pooled) * (1 / control.n + 1 / treatment.n))
    var = pc * (1 - pc) / control.n + pt * (1 - pt) / treatment.n
    return _estimate(pc, pt, var, alpha, p_se=p_se)


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
    return _estimate(rc, rt, vc + vt, alpha)


def cuped_theta(control: PairStats, treatment: PairStats) -> Num:
    """theta = cov(y, x) / var(x), pooled across arms from within-arm centred sums."""
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
        return MeanStats(n=s.n, sum=mean * s.n, sum_sq=var * (s.n - 1) + mean * mean * s.n)

    return welch_test(adjusted(control), adjusted(treatment), alpha)
