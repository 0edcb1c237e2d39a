"""Calibrated probabilities for expected-value ranking, in numpy/scipy only.

``score = P(engage | s) * value(item) * P(continue | s)`` where ``s`` is the model's raw score and
both probabilities come from calibrators fitted on logged outcomes (one row per shown item: the
raw score it had, whether the user engaged with it, whether the session went on afterwards).

* isotonic: pool-adjacent-violators on the outcomes sorted by score, a monotone step function,
  linearly interpolated between blocks and clipped outside the fitted range;
* Platt: ``sigmoid(a * s + b)``, two parameters fitted by maximum likelihood.

>>> cal = fit_calibrator(np.array([0.0, 1.0, 2.0, 3.0]), np.array([0, 1, 0, 1]), "isotonic")
>>> cal(np.array([0.0, 1.5, 3.0])).round(3).tolist()
[0.0, 0.5, 1.0]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from vitrina.errors import ConfigError, DataValidationError

Method = Literal["isotonic", "platt"]


@dataclass(frozen=True, eq=False)
class Isotonic:
    """Monotone non-decreasing map through the points ``(x, y)`` (``x`` strictly increasing)."""

    x: np.ndarray
    y: np.ndarray

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return np.interp(scores, self.x, self.y).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"method": "isotonic", "x": self.x.tolist(), "y": self.y.tolist()}


@dataclass(frozen=True)
class Platt:
    """``sigmoid(a * score + b)``."""

    a: float
    b: float

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return expit(self.a * np.asarray(scores, dtype=np.float64) + self.b).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"method": "platt", "a": self.a, "b": self.b}


Calibrator = Isotonic | Platt


def _pool_adjacent_violators(y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares non-decreasing fit; returns block means and block sizes (in points)."""
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for yi, wi in zip(y.tolist(), w.tolist(), strict=True):
        means.append(yi)
        weights.append(wi)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            m, wt, sz = means.pop(), weights.pop(), sizes.pop()
            total = weights[-1] + wt
            means[-1] = (means[-1] * weights[-1] + m * wt) / total
            weights[-1] = total
            sizes[-1] += sz
    return np.asarray(means), np.asarray(sizes)


def fit_isotonic(scores: np.ndarray, outcomes: np.ndarray) -> Isotonic:
    """Isotonic calibration: ties in score are pooled first, then PAV over the unique scores."""
    xs, inverse = np.unique(scores, return_inverse=True)
    weight = np.bincount(inverse).astype(np.float64)
    mean = np.bincount(inverse, weights=outcomes) / weight
    block_mean, block_size = _pool_adjacent_violators(mean, weight)
    ends = np.cumsum(block_size)
    starts = ends - block_size
    x = np.column_stack([xs[starts], xs[ends - 1]]).ravel()
    y = np.repeat(block_mean, 2)
    single = np.repeat(block_size == 1, 2) & (np.arange(len(x)) % 2 == 1)
    return Isotonic(x[~single], y[~single])


def fit_platt(scores: np.ndarray, outcomes: np.ndarray) -> Platt:
    """Platt scaling by maximum likelihood (L-BFGS on the log loss, analytic gradient)."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(outcomes, dtype=np.float64)

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        z = params[0] * s + params[1]
        nll = -(t * log_expit(z) + (1 - t) * log_expit(-z)).sum()
        r = expit(z) - t
        return float(nll), np.array([(r * s).sum(), r.sum()])

    res = minimize(loss, np.zeros(2), jac=True, method="L-BFGS-B")
    return Platt(float(res.x[0]), float(res.x[1]))


def fit_calibrator(scores: np.ndarray, outcomes: np.ndarray, method: Method = "isotonic") -> Calibrator:
    """Fit a calibrator from raw scores and 0/1 outcomes of the same length."""
    scores = np.asarray(scores, dtype=np.float64)
    outcomes = np.asarray(outcomes, dtype=np.float64)
    if scores.shape != outcomes.shape or scores.ndim != 1 or len(scores) == 0:
        raise DataValidationError(
            f"calibration: need equal-length 1-d scores and outcomes, got {scores.shape}, {outcomes.shape}"
        )
    if not np.isfinite(scores).all() or not np.isin(outcomes, (0.0, 1.0)).all():
        raise DataValidationError("calibration: scores must be finite and outcomes 0 or 1")
    if method == "isotonic":
        return fit_isotonic(scores, outcomes)
    if method == "platt":
        return fit_platt(scores, outcomes)
    raise ConfigError(f"calibration method {method!r}; expected 'isotonic' or 'platt'")


def _from_dict(d: dict[str, Any]) -> Calibrator:
    if d.get("method") == "isotonic":
        return Isotonic(np.asarray(d["x"], dtype=np.float64), np.asarray(d["y"], dtype=np.float64))
    if d.get("method") == "platt":
        return Platt(float(d["a"]), float(d["b"]))
    raise ConfigError(f"calibration: unknown method {d.get('method')!r}; expected 'isotonic' or 'platt'")


@dataclass(frozen=True, eq=False)
class ExpectedValueModel:
    """``P(engage | s) * value * P(continue | s)`` from two calibrators."""

    engage: Calibrator
    cont: Calibrator

    def __call__(self, scores: np.ndarray, value: np.ndarray) -> np.ndarray:
        return self.engage(scores) * value * self.cont(scores)

    @classmethod
    def fit(cls, log: pl.DataFrame, method: Method = "isotonic") -> ExpectedValueModel:
        """Fit from a log with columns ``score``, ``engaged`` (0/1) and ``continued`` (0/1)."""
        missing = {"score", "engaged", "continued"} - set(log.columns)
        if missing:
            raise DataValidationError(
                f"calibration log: missing columns {sorted(missing)}; has {log.columns}"
            )
        s = log["score"].cast(pl.Float64).to_numpy()
        return cls(
            fit_calibrator(s, log["engaged"].cast(pl.Float64).to_numpy(), method),
            fit_calibrator(s, log["continued"].cast(pl.Float64).to_numpy(), method),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"engage": self.engage.to_dict(), "continue": self.cont.to_dict()}))

    @classmethod
    def load(cls, path: str | Path) -> ExpectedValueModel:
        try:
            d = json.loads(Path(path).read_text())
            return cls(_from_dict(d["engage"]), _from_dict(d["continue"]))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"calibration file {path}: unreadable ({exc}); write it with ExpectedValueModel.save"
            ) from exc
