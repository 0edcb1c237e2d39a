"""Bootstrap interval for the difference of a quantile (e.g. the median) between two arms."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from vitrina.experiments.stats import EffectEstimate

__all__ = ["bootstrap_quantile_test"]


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
    deviation.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}; use 0.5 for the median")
    c = np.asarray(control, dtype=np.float64)
    t = np.asarray(treatment, dtype=np.float64)
    if c.size < 2 or t.size < 2:
        raise ValueError(f"need at least 2 units per arm, got {c.size} control and {t.size} treatment")
    rng = np.random.default_rng(seed)
    qc = np.quantile(c[rng.integers(0, c.size, (n_resamples, c.size))], q, axis=1)
    qt = np.quantile(t[rng.integers(0, t.size, (n_resamples, t.size))], q, axis=1)
    diffs = qt - qc
    point_c, point_t = float(np.quantile(c, q)), float(np.quantile(t, q))
    p = min(1.0, 2 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
    return EffectEstimate(
        control=point_c,
        treatment=point_t,
        effect=point_t - point_c,
        se=float(diffs.std(ddof=1)),
        ci_low=float(np.quantile(diffs, alpha / 2)),
        ci_high=float(np.quantile(diffs, 1 - alpha / 2)),
        p_value=p,
        alpha=alpha,
    )
