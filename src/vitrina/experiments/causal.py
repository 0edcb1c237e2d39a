"""Causal effects when no A/B test is possible: difference-in-differences and synthetic control.

* :func:`diff_in_diff`: two-way fixed-effects OLS ``y ~ unit FE + period FE + treated x post`` with
  standard errors clustered by unit (CR1, as statsmodels) and inference on t(G - 1), G = clusters;
  ``inference="wild"`` replaces the p-value and interval by the restricted wild cluster bootstrap
  (Webb six-point weights, interval by test inversion), which holds its level with few clusters.
  Below :data:`FEW_CLUSTERS` clusters a :class:`FewClustersWarning` is raised. The pre-trend is
  reported as an estimate with its interval: the slope of the treated-minus-control gap over the
  pre-period, and an event study (one coefficient per period relative to the last pre-period, leads
  and lags) so the user sees how large a violation the data allow, not only a p-value.
* :func:`synthetic_control`: weights on control units (non-negative, summing to 1) that best reproduce
  the treated unit's pre-period path (constrained least squares, scipy SLSQP); the effect is the gap
  between the treated unit and its synthetic twin after treatment, with a placebo-in-space p-value.

With 8 clusters (4 treated) and normal p-values on clustered SEs, the A/A false-positive rate was far
above 5%; see docs/benchmarks.md for the rate of t(G-1) and of the wild bootstrap.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
from numpy.typing import ArrayLike, NDArray
from scipy import optimize
from scipy import stats as sps

from vitrina.errors import DataValidationError

__all__ = [
    "FEW_CLUSTERS",
    "DidResult",
    "EventStudy",
    "FewClustersWarning",
    "SyntheticControlResult",
    "diff_in_diff",
    "synthetic_control",
    "synthetic_weights",
    "wild_cluster_bootstrap",
]

#: Below this many clusters, cluster-robust t inference is unreliable and a warning is raised.
FEW_CLUSTERS = 30
_WEBB = np.array([-np.sqrt(1.5), -1.0, -np.sqrt(0.5), np.sqrt(0.5), 1.0, np.sqrt(1.5)])


class FewClustersWarning(UserWarning):
    """Too few clusters for cluster-robust inference; use ``inference="wild"``."""


@dataclass(frozen=True)
class EventStudy:
    """Per period: treated-minus-control effect relative to the reference (last pre) period, t(G-1) CI."""

    periods: NDArray[np.float64]
    effect: NDArray[np.float64]
    ci_low: NDArray[np.float64]
    ci_high: NDArray[np.float64]
    reference: float


@dataclass(frozen=True)
class DidResult:
    """DiD effect with clustered SE, CI and p (``inference``), the pre-trend slope with its interval, and
    the event study."""

    effect: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float
    pretrend_slope: float
    pretrend_ci_low: float
    pretrend_ci_high: float
    pretrend_p_value: float
    n_clusters: int
    n_treated_clusters: int
    inference: str
    event_study: EventStudy

    @property
    def pretrend_ok(self) -> bool:
        """Pre-trends parallel at the 5% level (necessary, not sufficient: see the slope's interval)."""
        return self.pretrend_p_value >= 0.05


def _codes(values: NDArray) -> NDArray[np.int64]:
    return np.unique(values, return_inverse=True)[1].astype(np.int64)


def _dummies(codes: NDArray[np.int64], drop_first: bool) -> NDArray[np.float64]:
    m = np.eye(int(codes.max()) + 1)[codes]
    return m[:, 1:] if drop_first else m


class _Fe:
    """Residual maker of the two-way fixed effects (intercept, unit and period dummies)."""

    def __init__(self, unit_codes: NDArray[np.int64], period_codes: NDArray[np.int64]) -> None:
        self.x = np.column_stack(
            [np.ones(unit_codes.size), _dummies(unit_codes, True), _dummies(period_codes, True)]
        )
        self.rank = int(np.linalg.matrix_rank(self.x))

    def resid(self, v: NDArray[np.float64]) -> NDArray[np.float64]:
        return v - self.x @ np.linalg.lstsq(self.x, v, rcond=None)[0]


def _cluster_sums(values: NDArray[np.float64], clusters: NDArray[np.int64], g: int) -> NDArray[np.float64]:
    """Sum of each column of ``values`` within each cluster: (G, ...) array."""
    out = np.zeros((g, *values.shape[1:]))
    np.add.at(out, clusters, values)
    return out


def _ols_cluster(
    y: NDArray[np.float64], xs: NDArray[np.float64], fe: _Fe, clusters: NDArray[np.int64], g: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Coefficients of the columns ``xs`` (FE absorbed) and their CR1 standard errors (as statsmodels)."""
    xt = fe.resid(xs)
    yt = fe.resid(y)
    xtx_inv = np.linalg.inv(xt.T @ xt)
    beta = xtx_inv @ xt.T @ yt
    u = yt - xt @ beta
    scores = _cluster_sums(xt * u[:, None], clusters, g)
    n, k = y.size, fe.rank + xs.shape[1]
    c = g / (g - 1) * (n - 1) / (n - k)
    cov = c * xtx_inv @ scores.T @ scores @ xtx_inv
    return beta, np.sqrt(np.diag(cov))


def wild_cluster_bootstrap(
    y: ArrayLike,
    d: ArrayLike,
    unit_codes: ArrayLike,
    period_codes: ArrayLike,
    alpha: float = 0.05,
    n_draws: int = 9999,
    seed: int = 0,
    interval: bool = True,
) -> tuple[float, float, float]:
    """Restricted wild cluster bootstrap (WCR, Webb weights) for the coefficient of ``d`` in a two-way FE
    regression clustered by unit: the p-value of beta = 0 and the interval {beta0 : p(beta0) >= alpha}.

    Every draw multiplies the restricted residuals of a cluster by one weight and recomputes the CR1 t
    statistic; with the fixed effects absorbed both are linear in the weights, so all draws cost one
    (G x G) product per tested beta0 (Roodman et al. 2019, "Fast and wild"). ``interval=False`` skips
    the inversion (bounds NaN), e.g. in simulations.
    """
    ya, da = np.asarray(y, dtype=np.float64), np.asarray(d, dtype=np.float64)
    units, periods = np.asarray(unit_codes), np.asarray(period_codes)
    fe = _Fe(units, periods)
    g = int(units.max()) + 1
    n, k = ya.size, fe.rank + 1
    c = g / (g - 1) * (n - 1) / (n - k)
    xt, yt = fe.resid(da), fe.resid(ya)
    xx = float(xt @ xt)
    beta = float(xt @ yt) / xx
    u = yt - beta * xt
    se = float(np.sqrt(c * np.sum(_cluster_sums(xt * u, units, g) ** 2))) / xx
    onehot = np.eye(g)[units]
    r_y = fe.resid(yt[:, None] * onehot)  # M(diag(y~) 1_h): restricted residual pieces, linear in beta0
    r_x = fe.resid(xt[:, None] * onehot)
    s_y = _cluster_sums(xt[:, None] * r_y, units, g)  # (G, G)
    s_x = _cluster_sums(xt[:, None] * r_x, units, g)
    a_y = _cluster_sums(xt * yt, units, g)
    w = _cluster_sums(xt * xt, units, g)
    v = np.random.default_rng(seed).choice(_WEBB, size=(g, n_draws))

    def p_value(beta0: float) -> float:
        shift = (a_y - beta0 * w) @ v / xx  # beta* - beta0 per draw
        scores = (s_y - beta0 * s_x) @ v - np.outer(w, shift)
        t_star = shift / np.sqrt(c * np.sum(scores * scores, axis=0)) * xx
        t_obs = (beta - beta0) / se
        return float(np.mean(np.abs(t_star) >= abs(t_obs)))

    def bound(direction: float) -> float:
        inside, step = beta, se
        outside = beta + direction * step
        while p_value(outside) >= alpha and step < 1e6 * (se + abs(beta) + 1):
            inside, step = outside, step * 2
            outside = beta + direction * step
        for _ in range(50):
            mid = (inside + outside) / 2
            inside, outside = (mid, outside) if p_value(mid) >= alpha else (inside, mid)
        return (inside + outside) / 2

    if not interval:
        return p_value(0.0), np.nan, np.nan
    return p_value(0.0), bound(-1.0), bound(1.0)


def diff_in_diff(
    df: pl.DataFrame,
    *,
    unit: str = "unit",
    period: str = "period",
    outcome: str = "y",
    treated: str = "treated",
    post: str = "post",
    alpha: float = 0.05,
    inference: Literal["t", "wild"] = "t",
    n_draws: int = 9999,
    seed: int = 0,
) -> DidResult:
    """Two-way fixed-effects DiD with unit-clustered SEs; ``treated`` and ``post`` are 0/1 columns.

    ``period`` must be numeric (ordered) for the pre-trend slope and the event study. ``inference="t"``:
    CR1 standard errors on t(G - 1); ``"wild"``: p-value and interval from
    :func:`wild_cluster_bootstrap` (``se`` stays the CR1 one).
    """
    missing = [c for c in (unit, period, outcome, treated, post) if c not in df.columns]
    if missing:
        raise DataValidationError(f"diff_in_diff: missing column(s) {missing}; found {df.columns}")
    numeric = (outcome, period, treated, post)
    bad = [c for c in numeric if df[c].cast(pl.Float64, strict=False).is_null().any()]
    if bad:
        raise DataValidationError(f"diff_in_diff: column(s) {bad} must be numbers without nulls")
    unit_codes = _codes(df[unit].cast(pl.String).to_numpy())
    period_values = df[period].cast(pl.Float64).to_numpy()
    period_codes = _codes(period_values)
    tr = df[treated].cast(pl.Float64).to_numpy()
    po = df[post].cast(pl.Float64).to_numpy()
    if len(np.unique(tr)) != 2 or len(np.unique(po)) != 2:
        raise DataValidationError(
            "diff_in_diff: need both treated and control units and both pre and post periods"
        )
    y = df[outcome].cast(pl.Float64).to_numpy()
    g = int(unit_codes.max()) + 1
    n_treated = int(np.unique(unit_codes[tr == 1]).size)
    if g < FEW_CLUSTERS:
        warnings.warn(
            f"diff_in_diff: only {g} clusters ({n_treated} treated); cluster-robust t inference is "
            f"unreliable below {FEW_CLUSTERS}: use inference='wild' and read the result with care",
            FewClustersWarning,
            stacklevel=2,
        )
    t_crit = float(sps.t.ppf(1 - alpha / 2, g - 1))
    fe = _Fe(unit_codes, period_codes)
    d = tr * po
    (beta,), (se,) = _ols_cluster(y, d[:, None], fe, unit_codes, g)
    if inference == "wild":
        p, lo, hi = wild_cluster_bootstrap(y, d, unit_codes, period_codes, alpha, n_draws, seed)
    else:
        p = float(2 * sps.t.sf(abs(beta / se), g - 1))
        lo, hi = beta - t_crit * se, beta + t_crit * se
    pre = po == 0
    pre_units, pre_periods = _codes(unit_codes[pre]), _codes(period_codes[pre])
    g_pre = int(pre_units.max()) + 1
    (slope,), (slope_se,) = _ols_cluster(
        y[pre], (tr[pre] * period_values[pre])[:, None], _Fe(pre_units, pre_periods), pre_units, g_pre
    )
    t_pre = float(sps.t.ppf(1 - alpha / 2, g_pre - 1))
    return DidResult(
        effect=float(beta),
        se=float(se),
        ci_low=float(lo),
        ci_high=float(hi),
        p_value=float(p),
        pretrend_slope=float(slope),
        pretrend_ci_low=float(slope - t_pre * slope_se),
        pretrend_ci_high=float(slope + t_pre * slope_se),
        pretrend_p_value=float(2 * sps.t.sf(abs(slope / slope_se), g_pre - 1)),
        n_clusters=g,
        n_treated_clusters=n_treated,
        inference="wild cluster bootstrap (WCR, Webb)" if inference == "wild" else "CR1, t(G-1)",
        event_study=_event_study(y, tr, po, period_values, period_codes, fe, unit_codes, g, t_crit),
    )


def _event_study(
    y: NDArray[np.float64],
    tr: NDArray[np.float64],
    po: NDArray[np.float64],
    period_values: NDArray[np.float64],
    period_codes: NDArray[np.int64],
    fe: _Fe,
    unit_codes: NDArray[np.int64],
    g: int,
    t_crit: float,
) -> EventStudy:
    """Leads and lags: treated x 1{period = k} for every period but the last pre-period."""
    periods = np.unique(period_values)
    reference = float(period_values[po == 0].max())
    keep = [k for k, value in enumerate(periods) if value != reference]
    xs = np.column_stack([tr * (period_codes == k) for k in keep])
    beta, se = _ols_cluster(y, xs, fe, unit_codes, g)
    return EventStudy(
        periods=periods[keep],
        effect=beta,
        ci_low=beta - t_crit * se,
        ci_high=beta + t_crit * se,
        reference=reference,
    )


def synthetic_weights(treated_pre: ArrayLike, controls_pre: ArrayLike) -> NDArray[np.float64]:
    """Weights w >= 0, sum(w) = 1 minimising ||treated_pre - controls_pre @ w||^2.

    ``treated_pre``: (T0,) pre-period outcomes; ``controls_pre``: (T0, J) for J control units.
    """
    y = np.asarray(treated_pre, dtype=np.float64)
    x = np.asarray(controls_pre, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != y.size:
        raise DataValidationError(f"controls_pre must be (T0={y.size}, J), got shape {x.shape}")
    j = x.shape[1]
    scale = float(np.abs(y).max()) or 1.0
    res = optimize.minimize(
        lambda w: float(np.sum((y - x @ w) ** 2)) / scale**2,
        np.full(j, 1.0 / j),
        jac=lambda w: -2 * x.T @ (y - x @ w) / scale**2,
        bounds=[(0.0, 1.0)] * j,
        constraints=[{"type": "eq", "fun": lambda w: np.sum(w) - 1.0, "jac": lambda w: np.ones_like(w)}],
        method="SLSQP",
        options={"maxiter": 500, "ftol": 1e-12},
    )
    if not res.success:
        raise DataValidationError(f"synthetic control weights did not converge: {res.message}")
    w = np.clip(res.x, 0.0, None)
    return w / w.sum()


@dataclass(frozen=True)
class SyntheticControlResult:
    """Weights, counterfactual path, average post-period effect, pre-fit RMSE and placebo p-value."""

    weights: NDArray[np.float64]
    counterfactual: NDArray[np.float64]
    effect: float
    pre_rmse: float
    placebo_p_value: float


def _post_pre_ratio(y: NDArray[np.float64], x: NDArray[np.float64], n_pre: int) -> tuple[float, float, float]:
    w = synthetic_weights(y[:n_pre], x[:n_pre])
    gap = y - x @ w
    pre_rmse = float(np.sqrt(np.mean(gap[:n_pre] ** 2)))
    post_rmse = float(np.sqrt(np.mean(gap[n_pre:] ** 2)))
    return post_rmse / max(pre_rmse, 1e-12), float(gap[n_pre:].mean()), pre_rmse


def synthetic_control(treated: ArrayLike, controls: ArrayLike, n_pre: int) -> SyntheticControlResult:
    """Synthetic-control effect for one treated unit: ``treated`` (T,), ``controls`` (T, J), ``n_pre`` pre.

    The placebo p-value ranks the treated unit's post/pre RMSE ratio among placebo runs where each
    control in turn plays the treated unit (Abadie et al. 2010); it needs many controls to be small.
    """
    y = np.asarray(treated, dtype=np.float64)
    x = np.asarray(controls, dtype=np.float64)
    if not 2 <= n_pre < y.size:
        raise DataValidationError(f"n_pre must be in [2, {y.size - 1}], got {n_pre}")
    w = synthetic_weights(y[:n_pre], x[:n_pre])
    ratio, effect, pre_rmse = _post_pre_ratio(y, x, n_pre)
    placebo = [
        _post_pre_ratio(x[:, j], np.delete(x, j, axis=1), n_pre)[0]
        for j in range(x.shape[1])
        if x.shape[1] > 2
    ]
    p = (1 + sum(r >= ratio for r in placebo)) / (1 + len(placebo))
    return SyntheticControlResult(
        weights=w, counterfactual=x @ w, effect=effect, pre_rmse=pre_rmse, placebo_p_value=float(p)
    )
