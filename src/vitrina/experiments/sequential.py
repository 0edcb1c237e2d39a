"""Sequential tests for repeated looks at a running experiment (peeking without inflating errors).

Two tests, on looks k = 1..K (last axis; leading axes are independent experiments):

* :func:`msprt` — mixture SPRT with a normal mixing distribution N(0, tau^2) on the effect (Johari et
  al. 2017, "Peeking at A/B tests"), from the effect estimates and their variances. Always valid: any
  number of looks at unplanned times, stop whenever the p-value drops below alpha. The price is power:
  with a few dozen planned looks its error rate is far below alpha.
* :func:`spending_test` — planned looks (e.g. every day of a 4-week test): an alpha-spending |Z|
  boundary (Pocock-type spending in calendar time, ``alpha * ln(1 + (e - 1) k / K)`` spent by look k)
  calibrated by re-randomisation, see :func:`rerandomised_z`. The re-drawn arm labels keep each unit's
  whole trajectory, so heavy tails, units arriving over time and growing cumulative metrics are all in
  the null distribution; nothing about the look-to-look correlation is assumed or planned. The
  boundary at look k only uses looks 1..k, so the test can stop at any planned look, and its
  (stagewise) p-value at the last planned look is uniform under H0.

Use :func:`spending_test` when the looks are fixed in advance (design ``sequential="spending"``: daily
looks over the planned weeks) and full alpha is wanted; use :func:`msprt` when looks are unplanned or
the horizon is open.

Sizing (:class:`LookModel`, :func:`sequential_power`, :func:`required_drift`): the planner needs the
power of the test that will run, not of a single look. The daily z statistics are modelled by their
canonical joint distribution (Jennison & Turnbull 2000, ch. 3): ``Z_k = theta g_k + W(t_k) / sqrt(t_k)``
with ``W`` a Brownian motion in information time ``t_k = g_k^2`` and ``g_k`` the drift at look k per
unit of drift ``theta`` at the last look. The power is the share of ``n_paths`` simulated paths (fixed
seed) that cross: the spending test's boundaries come, as in the analysis, from sets of ``DRAWS``
null paths under the quota of ``DRAWS + 1`` label vectors (so their noise costs power here too),
mSPRT's is its closed-form |Z| threshold.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vitrina.experiments.stats import EffectEstimate, MeanStats, PairStats, ratio_test, welch_test

__all__ = [
    "DRAWS",
    "LookModel",
    "MsprtResult",
    "SpendingResult",
    "look_estimates",
    "msprt",
    "pocock_spending",
    "required_drift",
    "rerandomised_z",
    "sequential_power",
    "spending_test",
]

_CHUNK = 8192
#: Re-randomisations of the daily-looks spending test in the analysis (its level is then
#: ``(ceil(alpha * (DRAWS + 1)) - 1) / (DRAWS + 1)``).
DRAWS = 500


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


def _look_means(x: NDArray[np.float64], present: NDArray[np.float64]) -> NDArray[np.float64]:
    """Mean of ``x`` over the units present at each look (0 where none is): the sums' shift."""
    n = present.sum(axis=0)
    return np.where(n > 0, (x * present).sum(axis=0) / np.maximum(n, 1), 0.0)


def _unit_columns(
    x: NDArray[np.float64], present: NDArray[np.float64], y: NDArray[np.float64] | None
) -> tuple[NDArray[np.float64], list[NDArray[np.float64]]]:
    """Per-unit columns whose sums over an arm are the sufficient statistics at every look, taken about
    the look's mean (returned as the shifts) so large means do not cancel the variance's digits."""
    kx = _look_means(x, present)
    x = (x - kx) * present
    if y is None:
        return np.concatenate([present, x, x * x], axis=1), [kx]
    ky = _look_means(y, present)
    y = (y - ky) * present
    return np.concatenate([present, x, y, x * x, y * y, x * y], axis=1), [kx, ky]


def _estimates(
    treated: NDArray[np.float64],
    total: NDArray[np.float64],
    shifts: list[NDArray[np.float64]],
    alpha: float,
) -> EffectEstimate:
    """Effect estimates from the column sums of the treated arm and of both arms together."""
    ratio = len(shifts) == 2
    parts = np.split(treated, 6 if ratio else 3, axis=-1)
    rest = np.split(total - treated, 6 if ratio else 3, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if ratio:
            return ratio_test(PairStats(*rest, *shifts), PairStats(*parts, *shifts), alpha)
        return welch_test(MeanStats(*rest, *shifts), MeanStats(*parts, *shifts), alpha)


def _checked(
    treated: ArrayLike, x: ArrayLike, present: ArrayLike, y: ArrayLike | None
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64] | None, NDArray[np.float64]]:
    xa = np.asarray(x, dtype=np.float64)
    pa = np.asarray(present, dtype=np.float64)
    ya = None if y is None else np.asarray(y, dtype=np.float64)
    ta = np.asarray(treated, dtype=np.float64)
    if xa.ndim != 2 or pa.shape != xa.shape or (ya is not None and ya.shape != xa.shape):
        raise ValueError(
            f"x, present (and y) must be (units, looks) arrays of one shape, got x {xa.shape}, "
            f"present {pa.shape}" + ("" if ya is None else f", y {ya.shape}")
        )
    if ta.shape != xa.shape[:1]:
        raise ValueError(f"treated must have one 0/1 entry per unit ({xa.shape[0]}), got shape {ta.shape}")
    return xa, pa, ya, ta


def look_estimates(
    treated: ArrayLike, x: ArrayLike, present: ArrayLike, y: ArrayLike | None = None, alpha: float = 0.05
) -> EffectEstimate:
    """Effect (treatment - control) at each look from per-unit values ``x`` of shape (units, looks).

    ``present`` (same shape, 0/1) says whether a unit counts at a look (it has entered the test);
    ``x`` is its cumulative metric up to the look. With ``y`` (denominators) the metric is the ratio
    sum(x) / sum(y) (delta method), else the mean of ``x`` (Welch).
    """
    xa, pa, ya, ta = _checked(treated, x, present, y)
    cols, shifts = _unit_columns(xa, pa, ya)
    return _estimates(ta @ cols, cols.sum(axis=0), shifts, alpha)


def rerandomised_z(
    treated: ArrayLike,
    x: ArrayLike,
    present: ArrayLike,
    share: float,
    rng: np.random.Generator,
    n_draws: int = 500,
    y: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """z statistics at each look for the observed labels (row 0) and ``n_draws`` re-drawn ones.

    Each re-draw assigns every unit to treatment with probability ``share`` (the design's Bernoulli
    assignment), so under the sharp null (no unit's trajectory depends on its arm) the observed row is
    exchangeable with the others. Units must be in the order they entered (the draws for the first
    units do not depend on later ones, so an interim look reproduces the same rows). Looks where an
    arm has fewer than 2 units give z = 0. Returns shape (n_draws + 1, looks).
    """
    if not 0 < share < 1:
        raise ValueError(f"share must be in (0, 1), got {share}; pass w_t / (w_c + w_t) of the design")
    xa, pa, ya, ta = _checked(treated, x, present, y)
    cols, shifts = _unit_columns(xa, pa, ya)
    sums = np.zeros((n_draws + 1, cols.shape[1]))
    for lo in range(0, cols.shape[0], _CHUNK):
        block = cols[lo : lo + _CHUNK]
        labels = np.empty((block.shape[0], n_draws + 1))
        labels[:, 0] = ta[lo : lo + _CHUNK]
        labels[:, 1:] = rng.random((block.shape[0], n_draws)) < share
        sums += labels.T @ block
    rest = cols.sum(axis=0) - sums
    with np.errstate(divide="ignore", invalid="ignore"):
        if ya is not None:
            c_r, t_r = (PairStats(*np.split(a, 6, axis=-1), *shifts) for a in (rest, sums))
            est = ratio_test(c_r, t_r)
            z = np.asarray(est.effect) / np.asarray(est.se)
        else:  # Welch's z without the t quantiles that welch_test also computes
            c, t = MeanStats(*np.split(rest, 3, axis=-1)), MeanStats(*np.split(sums, 3, axis=-1))
            z = (t.mean - c.mean) / np.sqrt(c.var / c.n + t.var / t.n)
    return np.nan_to_num(z, nan=0.0, posinf=np.inf, neginf=-np.inf)


def pocock_spending(fraction: ArrayLike, alpha: float = 0.05) -> NDArray[np.float64]:
    """Lan-DeMets Pocock-type alpha spent by time ``fraction`` in (0, 1]: alpha * ln(1 + (e - 1) t).

    >>> round(float(pocock_spending(1.0)), 6)
    0.05
    """
    return alpha * np.log1p((math.e - 1) * np.asarray(fraction, dtype=np.float64))


@dataclass(frozen=True)
class SpendingResult:
    """Per look: the |Z| boundary, the observed z and p-value; ``rejected`` at any look so far.

    ``p_value`` is below ``alpha`` exactly from the look where |z| exceeded the boundary on, and then
    stays at its stagewise value. Before a crossing it is above ``alpha`` and, at the last planned
    look, it is the stagewise p-value (uniform under H0).
    """

    z: NDArray[np.float64]
    boundary: NDArray[np.float64]
    p_value: NDArray[np.float64]
    alpha: float

    @property
    def rejected(self) -> NDArray[np.bool_]:
        """Whether |z| crossed the boundary at some look so far, per experiment."""
        return self.p_value[..., -1] < self.alpha


def spending_test(z: ArrayLike, planned_looks: int, alpha: float = 0.05) -> SpendingResult:
    """Planned-looks test from observed and re-randomised z paths, shape (..., 1 + draws, looks).

    Row 0 of axis -2 is the observed path, the others are exchangeable with it under H0 (see
    :func:`rerandomised_z`). By look k the boundaries let at most ``ceil(s_k * P) - 1`` of the P paths
    cross, with ``s_k`` the Pocock-type spending at k / ``planned_looks``; ties never cross. The p-value
    orders paths by crossing look, then |z| there (stagewise ordering); paths that have not crossed by
    look k are ordered by |z_k| and get p-values in (alpha, 1]. Ties count against the observed path.
    """
    a = np.abs(np.asarray(z, dtype=np.float64))
    if a.ndim < 2:
        raise ValueError(f"z must have shape (..., paths, looks), got {a.shape}")
    n_paths, looks = a.shape[-2:]
    if looks > planned_looks:
        raise ValueError(f"got {looks} looks but only {planned_looks} planned looks; plan more looks")
    quota = np.ceil(pocock_spending(np.arange(1, looks + 1) / planned_looks, alpha) * n_paths - 1e-9) - 1
    if pocock_spending(1.0, alpha) * n_paths <= 1:
        raise ValueError(f"{n_paths - 1} re-randomised paths cannot reach alpha = {alpha}; use >= 500")
    lead = a.shape[:-2]
    alive = np.ones((*lead, n_paths), dtype=bool)
    crossed = np.zeros(lead, dtype=np.int64)
    obs_done = np.zeros(lead, dtype=bool)
    p = np.empty((*lead, looks))
    boundary = np.empty((*lead, looks))
    for k in range(looks):
        col = a[..., k]
        live = np.where(alive, col, -np.inf)
        need = (quota[k] - crossed).astype(np.int64)
        threshold = np.take_along_axis(-np.sort(-live, axis=-1), need[..., None], axis=-1)[..., 0]
        new = alive & (live > threshold[..., None])
        boundary[..., k] = np.where(need > 0, threshold, np.inf)
        at_least = col >= col[..., :1]
        p_cross = (crossed + (new & at_least).sum(axis=-1)) / n_paths
        crossed = crossed + new.sum(axis=-1)
        alive &= ~new
        p_alive = alpha + (1 - alpha) * (alive & at_least).sum(axis=-1) / alive.sum(axis=-1)
        now = np.where(new[..., 0], p_cross, p_alive)
        p[..., k] = np.where(obs_done, p[..., k - 1] if k else 0.0, now)
        obs_done |= new[..., 0]
    return SpendingResult(
        z=np.asarray(z, dtype=np.float64)[..., 0, :], boundary=boundary, p_value=p, alpha=alpha
    )


@dataclass(frozen=True)
class LookModel:
    """Joint distribution of the z statistics at the planned looks, for sizing a sequential design.

    ``drift[k]``: mean of z at look k per unit of mean at the last look (ends at 1, non-decreasing);
    ``se_ratio[k]``: standard error of the effect estimate at look k over the one at the last look
    (mSPRT's mixture is on the effect, so its threshold depends on it). ``null_z`` holds ``n_paths``
    simulated null paths, shape (paths, looks).
    """

    drift: NDArray[np.float64]
    se_ratio: NDArray[np.float64]
    null_z: NDArray[np.float64]
    corr: tuple[tuple[float, ...], ...] | None = None

    @classmethod
    def build(
        cls,
        drift: ArrayLike,
        se_ratio: ArrayLike,
        n_paths: int = 20_000,
        seed: int = 0,
        corr: ArrayLike | None = None,
    ) -> LookModel:
        """Simulate the null paths; ``drift`` is made non-decreasing and scaled to end at 1.

        ``corr``: measured correlation of the z statistics at the first looks (e.g. over the history's
        days); later looks, or all without it, follow the Brownian motion in information time.
        """
        g = np.maximum.accumulate(np.maximum(np.asarray(drift, dtype=np.float64), 0.0))
        r = np.asarray(se_ratio, dtype=np.float64)
        if g.ndim != 1 or g.size == 0 or g[-1] <= 0 or r.shape != g.shape or np.any(r <= 0):
            raise ValueError(
                f"drift and se_ratio must be 1-d of one length with a positive last drift and positive "
                f"se ratios, got drift {g.shape} ending {g[-1] if g.size else None}, se_ratio {r.shape}"
            )
        g = g / g[-1]
        key = None
        if corr is not None:
            c = np.asarray(corr, dtype=np.float64)[: g.size, : g.size]
            key = tuple(tuple(row) for row in c.tolist())
        null_z = _null_paths(tuple(g.tolist()), n_paths, seed, key)
        return cls(drift=g, se_ratio=r, null_z=null_z, corr=key)


def _joint_corr(t: NDArray[np.float64], measured: NDArray[np.float64]) -> NDArray[np.float64]:
    """Correlation of the z statistics at information times ``t``: ``measured`` for the first looks,
    extended by independent increments (Brownian motion) after the last measured one."""
    out = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    d = measured.shape[0]
    out[:d, :d] = measured
    out[:d, d:] = measured[:, d - 1 : d] * np.sqrt(t[d - 1] / t[d:])[None, :]
    out[d:, :d] = out[:d, d:].T
    return out


@functools.lru_cache(maxsize=8)
def _null_paths(
    drift: tuple[float, ...], n_paths: int, seed: int, corr: tuple[tuple[float, ...], ...] | None = None
) -> NDArray[np.float64]:
    """Null z paths: W(t_k) / sqrt(t_k) with t_k = drift_k^2, or with the correlation of
    :func:`_joint_corr` when measured ``corr`` is given (cached: the planner asks per week)."""
    t = np.maximum(np.square(np.asarray(drift)), 1e-12)
    rng = np.random.default_rng(seed)
    if corr is None:
        steps = np.sqrt(np.diff(t, prepend=0.0))
        paths = np.cumsum(rng.standard_normal((n_paths, t.size)) * steps, axis=1) / np.sqrt(t)
    else:
        w, v = np.linalg.eigh(_joint_corr(t, np.asarray(corr)))
        root = v * np.sqrt(np.clip(w, 0.0, None))  # c = root @ root.T, also when only nearly PSD
        root /= np.sqrt(np.maximum((root * root).sum(axis=1, keepdims=True), 1e-300))
        paths = rng.standard_normal((n_paths, t.size)) @ root.T
    paths.flags.writeable = False
    return paths


def _rerandomised_boundaries(null_abs: NDArray[np.float64], alpha: float) -> NDArray[np.float64]:
    """|Z| boundary the observed path faces at each look, per set of ``DRAWS`` re-drawn null paths.

    ``null_abs``: (sets, DRAWS, looks). As in :func:`spending_test`, by look k at most the quota of the
    ``DRAWS + 1`` paths may have crossed; while the observed path has not, the null paths that cross are
    the top ``need`` alive ones, and the observed path crosses when it is above the ``need``-th largest
    alive null path. The boundary is random (it comes from 500 draws), which costs about a point of
    power against exact quantiles; sizing with these sets counts that cost.
    """
    sets, draws, looks = null_abs.shape
    quota = np.ceil(pocock_spending(np.arange(1, looks + 1) / looks, alpha) * (draws + 1) - 1e-9) - 1
    alive = np.ones((sets, draws), dtype=bool)
    crossed = np.zeros(sets, dtype=np.int64)
    boundary = np.full((sets, looks), np.inf)
    for k in range(looks):
        need = quota[k].astype(np.int64) - crossed
        values = np.where(alive, null_abs[:, :, k], -np.inf)
        ranked = -np.sort(-values, axis=1)
        pick = np.clip(np.stack([need - 1, need], axis=1), 0, draws - 1)
        at = np.take_along_axis(ranked, pick, axis=1)
        boundary[:, k] = np.where(need > 0, at[:, 0], np.inf)
        new = alive & (values > np.where(need > 0, at[:, 1], np.inf)[:, None])
        crossed += new.sum(axis=1)
        alive &= ~new
    return boundary


def _msprt_threshold(theta: float, se_ratio: NDArray[np.float64], alpha: float) -> NDArray[np.float64]:
    """mSPRT rejects at a look when |z| reaches this; mixing scale tau = the effect of drift theta."""
    r = np.maximum(theta * theta / np.square(se_ratio), 1e-300)
    return np.sqrt((1 + 1 / r) * (2 * math.log(1 / alpha) + np.log1p(r)))


def _spending_crossing(model: LookModel, alpha: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per path, the drifts theta >= 0 at which it crosses: above the first, or below the second.

    Path i faces the boundaries of re-drawn null set ``i mod sets``, simulated apart from the paths.
    """
    looks = model.drift.size
    sets = max(20, min(200, 4_000_000 // (DRAWS * looks)))
    nulls = _null_paths(tuple(model.drift.tolist()), sets * DRAWS, 1, model.corr)
    b = _rerandomised_boundaries(np.abs(nulls).reshape(sets, DRAWS, looks), alpha)
    b = b[np.arange(model.null_z.shape[0]) % sets]
    g = np.maximum(model.drift, 1e-9)
    with np.errstate(invalid="ignore"):
        up = np.where(np.isfinite(b), (b - model.null_z) / g, np.inf).min(axis=1)
        low = np.where(np.isfinite(b), (-b - model.null_z) / g, -np.inf).max(axis=1)
    return up, low


def sequential_power(
    test: Literal["spending", "msprt"],
    model: LookModel,
    theta: float,
    alpha: float = 0.05,
    tau_drift: float | None = None,
) -> float:
    """Probability that the test rejects at some planned look when z drifts to ``theta`` at the last.

    ``theta`` is the effect over its standard error at the last look (a fixed-horizon z-test has power
    about ``Phi(theta - z_{1 - alpha / 2})``). ``tau_drift``: mSPRT's mixing scale (the design's MDE)
    over that standard error; by default the effect is the MDE (``theta``).
    """
    if test == "spending":
        up, low = _spending_crossing(model, alpha)
        return float(np.mean((theta > up) | (theta < low)))
    shifted = np.abs(model.null_z + theta * model.drift)
    threshold = _msprt_threshold(theta if tau_drift is None else tau_drift, model.se_ratio, alpha)
    return float(np.mean(np.any(shifted >= threshold, axis=1)))


def required_drift(
    test: Literal["spending", "msprt"], model: LookModel, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest drift at the last look (effect / its standard error) with which the test has ``power``.

    The sample size of the sequential design is the fixed-horizon one times
    ``(required_drift / (z_{1 - alpha / 2} + z_power))^2`` (its inflation factor). Bisection to 1e-4.
    """
    if test == "spending":
        up, low = _spending_crossing(model, alpha)

        def power_at(theta: float) -> float:
            return float(np.mean((theta > up) | (theta < low)))

    else:

        def power_at(theta: float) -> float:
            return sequential_power("msprt", model, theta, alpha)

    lo, hi = 0.0, 4.0
    while power_at(hi) < power:
        lo, hi = hi, 2 * hi
        if hi > 1e3:
            raise ValueError(f"the {test} test cannot reach power {power} with these looks")
    while hi - lo > 1e-4:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if power_at(mid) < power else (lo, mid)
    return hi
