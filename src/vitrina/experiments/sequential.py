"""Sequential tests for repeated looks at a running experiment (peeking without inflating errors).

Two tests on the sequence of effect estimates ``effect_k`` with variances ``var_k`` at looks k = 1..K
(last axis; leading axes are independent experiments):

* :func:`msprt` — mixture SPRT with a normal mixing distribution N(0, tau^2) on the effect (Johari et
  al. 2017, "Peeking at A/B tests"). Always valid: any number of looks at any times, stop whenever
  the always-valid p-value drops below alpha. It is conservative for a finite number of looks.
* :func:`max_z_test` — planned looks (e.g. every day of a 4-week test): reject at the first look where
  ``|Z_k|`` passes a constant (Pocock-type) boundary chosen so that P(any crossing | H0) = alpha for
  the planned information fractions. Its p-value ``P(max_j |Z_j| >= observed running max)`` is exactly
  uniform under H0 at the final look, so the error rate is alpha, not less.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["MaxZResult", "MsprtResult", "max_z_boundary", "max_z_test", "msprt"]

_N_PATHS = 200_000


@dataclass(frozen=True)
class MsprtResult:
    """Per look: always-valid p-value and confidence sequence; ``rejected`` at any look so far."""

    p_value: NDArray[np.float64]
    ci_low: NDArray[np.float64]
    ci_high: NDArray[np.float64]
    alpha: float

    @property
    def rejected(self) -> NDArray[np.bool_]:
        """Whether H0 (no effect) was rejected at some look, per experiment."""
        return self.p_value[..., -1] < self.alpha


def msprt(effect: ArrayLike, var: ArrayLike, tau: float, alpha: float = 0.05) -> MsprtResult:
    """Normal-mixture SPRT of H0: effect = 0 given estimates and their variances at each look.

    ``tau`` is the prior scale of plausible effects (use the design's MDE). The confidence sequence
    is intersected over looks, so it only shrinks.
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}; use the minimum detectable effect of the design")
    e = np.asarray(effect, dtype=np.float64)
    v = np.asarray(var, dtype=np.float64)
    t2 = tau * tau
    log_lr = 0.5 * np.log(v / (v + t2)) + t2 * e * e / (2 * v * (v + t2))
    p = np.minimum.accumulate(np.minimum(1.0, np.exp(-log_lr)), axis=-1)
    half = np.sqrt(v * (v + t2) / t2 * (2 * np.log(1 / alpha) + np.log((v + t2) / v)))
    low = np.maximum.accumulate(e - half, axis=-1)
    high = np.minimum.accumulate(e + half, axis=-1)
    return MsprtResult(p_value=p, ci_low=low, ci_high=high, alpha=alpha)


@lru_cache(maxsize=32)
def _null_max_abs_z(corr: tuple[tuple[float, ...], ...]) -> NDArray[np.float64]:
    """Sorted simulated max_k |Z_k| under H0 for the correlation of the looks' z statistics (fixed seed)."""
    chol = np.linalg.cholesky(np.asarray(corr) + 1e-12 * np.eye(len(corr)))
    rng = np.random.default_rng(20240601)
    z = rng.standard_normal((_N_PATHS, len(corr))) @ chol.T
    return np.sort(np.abs(z).max(axis=1))


def _look_corr(fractions: ArrayLike | None, corr: ArrayLike | None) -> tuple[tuple[float, ...], ...]:
    """Correlation of the looks: given, or sqrt(t_j / t_k) for Brownian information fractions t."""
    if corr is not None:
        c = np.asarray(corr, dtype=np.float64)
        if c.ndim != 2 or c.shape[0] != c.shape[1] or not np.allclose(np.diag(c), 1.0):
            raise ValueError(f"corr must be a square correlation matrix of the looks, got shape {c.shape}")
    else:
        t = np.asarray(fractions, dtype=np.float64)
        if t.ndim != 1 or t.size == 0 or np.any(t <= 0) or np.any(np.diff(t) <= 0) or abs(t[-1] - 1.0) > 1e-9:
            raise ValueError(
                f"information fractions must increase strictly and end at 1, got {t.tolist()}; "
                "e.g. planned units / per-unit variance at each look over the same at the end"
            )
        c = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    return tuple(tuple(r) for r in np.round(c, 6).tolist())


def max_z_boundary(
    fractions: ArrayLike | None = None, alpha: float = 0.05, corr: ArrayLike | None = None
) -> float:
    """Constant |Z| boundary with P(max_k |Z_k| >= boundary | H0) = alpha for the planned looks."""
    return float(np.quantile(_null_max_abs_z(_look_corr(fractions, corr)), 1 - alpha))


@dataclass(frozen=True)
class MaxZResult:
    """Per look: z statistic and p-value of the running max |Z|; the boundary; crossing flag."""

    z: NDArray[np.float64]
    p_value: NDArray[np.float64]
    boundary: float
    alpha: float

    @property
    def rejected(self) -> NDArray[np.bool_]:
        """Whether |Z| crossed the boundary at some look so far, per experiment."""
        return self.p_value[..., -1] < self.alpha


def max_z_test(
    effect: ArrayLike,
    var: ArrayLike,
    fractions: ArrayLike | None = None,
    alpha: float = 0.05,
    corr: ArrayLike | None = None,
) -> MaxZResult:
    """Planned-looks test: looks observed so far (last axis) against all planned looks.

    The looks are described by Brownian information ``fractions`` (independent increments, e.g. a
    mean over arriving units) or, for metrics whose per-unit values grow over time (cumulative sums),
    by the planned correlation matrix ``corr`` of the looks' z statistics. Fewer looks than planned is
    an interim analysis; the p-value is then still valid.
    """
    planned = _look_corr(fractions, corr)
    null = _null_max_abs_z(planned)
    e = np.asarray(effect, dtype=np.float64)
    v = np.asarray(var, dtype=np.float64)
    if e.shape[-1] > len(planned):
        raise ValueError(f"got {e.shape[-1]} looks but only {len(planned)} planned looks; plan more looks")
    z = e / np.sqrt(v)
    running = np.maximum.accumulate(np.abs(z), axis=-1)
    p = 1.0 - np.searchsorted(null, running, side="left") / null.size
    boundary = float(np.quantile(null, 1 - alpha))
    return MaxZResult(z=z, p_value=np.maximum(p, 1.0 / null.size), boundary=boundary, alpha=alpha)
