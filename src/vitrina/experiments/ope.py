"""Off-policy evaluation from logs of a stochastic logging policy, and exploration policies that log.

Given logged (context, action, reward, propensity p = pi_log(action | context)) and the new policy's
probability ``pi_new(action | context)`` of the logged action:

* IPS: ``mean(w * r)`` with ``w = pi_new / p`` — unbiased, high variance.
* SNIPS: ``sum(w * r) / sum(w)`` — self-normalised, small bias, lower variance.
* DR: ``mean(dm + w * (r - q_logged))`` with ``dm = sum_a pi_new(a) q(a)`` from a reward model ``q``
  — unbiased if either the propensities or the reward model are right.

Intervals are normal intervals from the per-record contributions (delta method for SNIPS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

from vitrina.errors import DataValidationError

__all__ = [
    "OpeEstimate",
    "doubly_robust",
    "epsilon_greedy",
    "ips",
    "snips",
    "softmax_sample",
]


@dataclass(frozen=True)
class OpeEstimate:
    """Estimated value of the new policy with a normal confidence interval."""

    value: float
    se: float
    ci_low: float
    ci_high: float
    effective_sample_size: float


def _weights(target_prob: ArrayLike, propensity: ArrayLike, reward: ArrayLike) -> tuple[NDArray, NDArray]:
    pt = np.asarray(target_prob, dtype=np.float64)
    p = np.asarray(propensity, dtype=np.float64)
    r = np.asarray(reward, dtype=np.float64)
    if not (pt.shape == p.shape == r.shape) or p.ndim != 1 or p.size < 2:
        raise DataValidationError(
            "target_prob, propensity and reward must be 1-d of the same length >= 2, "
            f"got {pt.shape}, {p.shape}, {r.shape}"
        )
    if np.any((p <= 0) | (p > 1)):
        raise DataValidationError(f"propensities must be in (0, 1], got min {p.min()} max {p.max()}")
    if np.any((pt < 0) | (pt > 1)):
        raise DataValidationError("target_prob must be probabilities in [0, 1]")
    return pt / p, r


def _estimate(value: float, se: float, w: NDArray, alpha: float) -> OpeEstimate:
    z = float(sps.norm.ppf(1 - alpha / 2))
    ess = float(w.sum() ** 2 / np.sum(w * w)) if np.any(w > 0) else 0.0
    return OpeEstimate(
        value=value, se=se, ci_low=value - z * se, ci_high=value + z * se, effective_sample_size=ess
    )


def ips(target_prob: ArrayLike, propensity: ArrayLike, reward: ArrayLike, alpha: float = 0.05) -> OpeEstimate:
    """Inverse propensity scoring estimate of the new policy's mean reward."""
    w, r = _weights(target_prob, propensity, reward)
    c = w * r
    return _estimate(float(c.mean()), float(c.std(ddof=1) / np.sqrt(c.size)), w, alpha)


def snips(
    target_prob: ArrayLike, propensity: ArrayLike, reward: ArrayLike, alpha: float = 0.05
) -> OpeEstimate:
    """Self-normalised IPS (ratio estimator; delta-method interval)."""
    w, r = _weights(target_prob, propensity, reward)
    if w.sum() <= 0:
        raise DataValidationError(
            "the new policy gives probability 0 to every logged action; SNIPS undefined"
        )
    value = float(np.sum(w * r) / np.sum(w))
    lin = w * (r - value) / w.mean()
    return _estimate(value, float(lin.std(ddof=1) / np.sqrt(lin.size)), w, alpha)


def doubly_robust(
    target_prob: ArrayLike,
    propensity: ArrayLike,
    reward: ArrayLike,
    q_logged: ArrayLike,
    dm: ArrayLike,
    alpha: float = 0.05,
) -> OpeEstimate:
    """Doubly robust estimate.

    ``q_logged``: model reward of the logged action; ``dm``: ``sum_a pi_new(a | x) q(x, a)`` per record.
    """
    w, r = _weights(target_prob, propensity, reward)
    q = np.asarray(q_logged, dtype=np.float64)
    d = np.asarray(dm, dtype=np.float64)
    if q.shape != r.shape or d.shape != r.shape:
        raise DataValidationError(f"q_logged and dm must have shape {r.shape}, got {q.shape} and {d.shape}")
    c = d + w * (r - q)
    return _estimate(float(c.mean()), float(c.std(ddof=1) / np.sqrt(c.size)), w, alpha)


def epsilon_greedy(ranked_items: ArrayLike, epsilon: float, rng: np.random.Generator) -> tuple[object, float]:
    """Show the top item with prob. 1 - epsilon, else a uniformly random one; returns (item, propensity).

    The propensity is the total probability of the chosen item: ``1 - eps + eps/n`` for the top item,
    ``eps/n`` for the others.
    """
    items = np.asarray(ranked_items)
    n = items.size
    if n == 0 or not 0.0 <= epsilon <= 1.0:
        raise DataValidationError(
            f"need a non-empty ranked list and epsilon in [0, 1], got n={n}, epsilon={epsilon}"
        )
    idx = int(rng.integers(n)) if rng.random() < epsilon else 0
    prop = epsilon / n + (1 - epsilon if idx == 0 else 0.0)
    return items[idx].item(), prop


def softmax_sample(
    items: ArrayLike, scores: ArrayLike, temperature: float, rng: np.random.Generator
) -> tuple[object, float]:
    """Sample one item with probability softmax(scores / temperature); returns (item, propensity)."""
    s = np.asarray(scores, dtype=np.float64)
    it = np.asarray(items)
    if s.shape != it.shape or s.ndim != 1 or s.size == 0 or temperature <= 0:
        raise DataValidationError(
            f"items and scores must be non-empty 1-d of equal length and temperature > 0, got {it.shape}, "
            f"{s.shape}, {temperature}"
        )
    z = (s - s.max()) / temperature
    p = np.exp(z) / np.exp(z).sum()
    idx = int(rng.choice(s.size, p=p))
    return it[idx].item(), float(p[idx])
