"""Bootstrap interval for the difference of a quantile (e.g. the median) between two arms.

The percentile bootstrap of a sample quantile is only valid for continuous data. When the quantile
falls on a tie (integer counts, zero-inflated revenue) the resampled quantiles of both arms mostly
land on the same value, the bootstrap difference is exactly 0 in most resamples and the p-value is 1
whatever the effect (99% of A/A runs on integer metrics). Such inputs are refused with
:class:`NotEstimable` instead of reported: test the share of units above the value (a proportion
metric) or the mean.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from vitrina.experiments.stats import EffectEstimate, NotEstimable

__all__ = ["MAX_TIE_SHARE", "bootstrap_quantile_test"]

#: Largest share of units (both arms pooled) that may share the value at the quantile.
MAX_TIE_SHARE = 0.01


def bootstrap_quantile_test(
    control: ArrayLike,
    treatment: ArrayLike,
    q: float = 0.5,
    alpha: float = 0.05,
    n_resamples: int = 2000,
    seed: int = 0,
) -> EffectEstimate:
    """Percentile-bootstrap interval of ``quantile(treatment, q) - quantile(control, q)``.

    Units are resampled with replacement within each arm. The p-value is the two-sided bootstrap
    p-value ``2 * min(P(diff* <= 0), P(diff* >= 0))`` (capped at 1); ``se`` is the bootstrap standard
    deviation; the relative interval is the percentile interval of ``q_t* / q_c* - 1``. Raises
    :class:`~vitrina.experiments.stats.NotEstimable` when more than :data:`MAX_TIE_SHARE` of the units
    share the value at the quantile.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}; use 0.5 for the median")
    c = np.asarray(control, dtype=np.float64)
    t = np.asarray(treatment, dtype=np.float64)
    if c.size < 2 or t.size < 2:
        raise ValueError(f"need at least 2 units per arm, got {c.size} control and {t.size} treatment")
    pooled = np.concatenate([c, t])
    at_q = np.quantile(pooled, q, method="inverted_cdf")
    tie_share = float(np.mean(pooled == at_q))
    if tie_share > MAX_TIE_SHARE:
        raise NotEstimable(
            f"the {q:g}-quantile lies on a tie: {tie_share:.1%} of units have the value {at_q:g} (more than "
            f"{MAX_TIE_SHARE:.0%}), so bootstrap quantiles of both arms coincide and the test has no power; "
            f"use a proportion metric (share of units above {at_q:g}) or the mean"
        )
    rng = np.random.default_rng(seed)
    qc = np.quantile(c[rng.integers(0, c.size, (n_resamples, c.size))], q, axis=1)
    qt = np.quantile(t[rng.integers(0, t.size, (n_resamples, t.size))], q, axis=1)
    diffs = qt - qc
    point_c, point_t = float(np.quantile(c, q)), float(np.quantile(t, q))
    p = min(1.0, 2 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = qt / qc - 1
    return EffectEstimate(
        control=point_c,
        treatment=point_t,
        effect=point_t - point_c,
        se=float(diffs.std(ddof=1)),
        ci_low=float(np.quantile(diffs, alpha / 2)),
        ci_high=float(np.quantile(diffs, 1 - alpha / 2)),
        p_value=p,
        alpha=alpha,
        rel_ci_low=float(np.quantile(rel, alpha / 2)) if np.all(qc != 0) else -np.inf,
        rel_ci_high=float(np.quantile(rel, 1 - alpha / 2)) if np.all(qc != 0) else np.inf,
    )
