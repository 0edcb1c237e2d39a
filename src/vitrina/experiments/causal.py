"""Causal effects when no A/B test is possible: difference-in-differences and synthetic control.

* :func:`diff_in_diff`: two-way fixed-effects OLS ``y ~ unit FE + period FE + treated x post`` with
  standard errors clustered by unit (statsmodels), plus a pre-trend check: in the pre-period, the
  treated-minus-control gap must not trend (slope test on ``treated x period``).
* :func:`synthetic_control`: weights on control units (non-negative, summing to 1) that best reproduce
  the treated unit's pre-period path (constrained least squares, scipy SLSQP); the effect is the gap
  between the treated unit and its synthetic twin after treatment, with a placebo-in-space p-value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import statsmodels.api as sm
from numpy.typing import ArrayLike, NDArray
from scipy import optimize

from vitrina.errors import DataValidationError

__all__ = ["DidResult", "SyntheticControlResult", "diff_in_diff", "synthetic_control", "synthetic_weights"]


@dataclass(frozen=True)
class DidResult:
    """DiD effect with clustered SE/CI/p and the pre-trend slope test."""

    effect: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float
    pretrend_slope: float
    pretrend_p_value: float
    n_clusters: int

    @property
    def pretrend_ok(self) -> bool:
        """Pre-trends parallel at the 5% level (a necessary, not sufficient, condition)."""
        return self.pretrend_p_value >= 0.05


def _dummies(codes: NDArray[np.int64], drop_first: bool) -> NDArray[np.float64]:
    m = np.eye(int(codes.max()) + 1)[codes]
    return m[:, 1:] if drop_first else m


def diff_in_diff(
    df: pl.DataFrame,
    *,
    unit: str = "unit",
    period: str = "period",
    outcome: str = "y",
    treated: str = "treated",
    post: str = "post",
    alpha: float = 0.05,
) -> DidResult:
    """Two-way fixed-effects DiD with unit-clustered SEs; ``treated`` and ``post`` are 0/1 columns.

    ``period`` must be numeric (ordered) for the pre-trend check.
    """
    missing = [c for c in (unit, period, outcome, treated, post) if c not in df.columns]
    if missing:
        raise DataValidationError(f"diff_in_diff: missing column(s) {missing}; found {df.columns}")
    units = df[unit].cast(pl.String).to_numpy()
    _, unit_codes = np.unique(units, return_inverse=True)
    _, period_codes = np.unique(df[period].to_numpy(), return_inverse=True)
    tr = df[treated].cast(pl.Float64).to_numpy()
    po = df[post].cast(pl.Float64).to_numpy()
    if len(np.unique(tr)) != 2 or len(np.unique(po)) != 2:
        raise DataValidationError(
            "diff_in_diff: need both treated and control units and both pre and post periods"
        )
    y = df[outcome].cast(pl.Float64).to_numpy()
    x = np.column_stack([tr * po, np.ones_like(y), _dummies(unit_codes, True), _dummies(period_codes, True)])
    fit = sm.OLS(y, x).fit(cov_type="cluster", cov_kwds={"groups": unit_codes})
    lo, hi = fit.conf_int(alpha)[0]
    pre = po == 0
    t = df[period].cast(pl.Float64).to_numpy()[pre]
    xp = np.column_stack(
        [tr[pre] * t, np.ones(pre.sum()), _dummies(unit_codes[pre], True), _dummies(period_codes[pre], True)]
    )
    pre_fit = sm.OLS(y[pre], xp).fit(cov_type="cluster", cov_kwds={"groups": unit_codes[pre]})
    return DidResult(
        effect=float(fit.params[0]),
        se=float(fit.bse[0]),
        ci_low=float(lo),
        ci_high=float(hi),
        p_value=float(fit.pvalues[0]),
        pretrend_slope=float(pre_fit.params[0]),
        pretrend_p_value=float(pre_fit.pvalues[0]),
        n_clusters=int(unit_codes.max()) + 1,
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
