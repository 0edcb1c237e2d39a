"""From a request to ranked item indices: who is asking, one model call, re-scoring, the top-k cut.

The order is fixed: resolve the user and history, build the candidate mask (filters.py), score
once, re-score (expected value, distance penalty), mask, cut (or, with exploration, draw the list
from the masked scores). Nothing is filtered after the cut and the model is never called again to
refill a short list; the response says how many items were eligible instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vitrina.experiments.ope import epsilon_greedy, softmax_sample
from vitrina.serving.bundle import ModelBundle
from vitrina.serving.calibration import ExpectedValueModel
from vitrina.serving.filters import BadRequest
from vitrina.serving.schemas import Exploration, Location, Ranking

#: fallback reasons, as reported in responses and in the ``vitrina_fallbacks_total`` metric
UNKNOWN_USER = "unknown_user"  # no model row and no usable history: popularity
UNKNOWN_USER_HISTORY = "unknown_user_history"  # unknown user, ranked from triggers / logged events
NO_KNOWN_ITEMS = "no_known_history_items"  # only a history was given and no id in it is known
MODEL_NO_HISTORY = "model_cannot_score_history"  # the model cannot rank from a history


@dataclass(frozen=True, eq=False)
class Target:
    """What to score: a known user (``history is None``), a history, or popularity (``popular``).

    ``times`` (Unix seconds, aligned with ``history``) and ``request`` are set for models that read
    time, and ``None`` otherwise."""

    user: int
    history: np.ndarray | None
    seen: np.ndarray
    popular: bool
    fallback_reason: str | None
    unknown_items: list[Any]
    times: np.ndarray | None = None
    request: int | None = None


def resolve_target(
    bundle: ModelBundle,
    user_id: Any | None,
    given: Sequence[Any] | None,
    logged: Sequence[str],
    *,
    given_times: Sequence[float] | None = None,
    logged_times: Sequence[float] | None = None,
    request_time: float,
) -> Target:
    """Decide how to rank: the user's model row, their history, or the popularity fallback.

    A history-capable model ranks from ``trained items + logged events + given items`` whenever
    there are logged events or given items, so new events count at once. Trained items come
    first, in the order of the model's saved sequence (oldest first, repeats kept).

    A model that reads time always ranks a known user from that history too, with each event's
    time: the trained events' saved times, the logged events' stored times (``logged_times``),
    the given items' ``given_times`` or, without them, ``request_time``.
    """
    model = bundle.model
    user = bundle.user_idx(user_id) if user_id is not None else -1
    given_all = [bundle.item_idx(i) for i in given or ()]
    unknown = [i for i, j in zip(given or (), given_all, strict=True) if j < 0]
    logged_all = [bundle.item_idx(i) for i in logged]
    logged_idx = [j for j in logged_all if j >= 0]
    fresh = np.asarray(logged_idx + [j for j in given_all if j >= 0], dtype=np.int64)
    trained = bundle.seen_of(user) if user >= 0 else np.zeros(0, dtype=np.int64)
    seen = np.concatenate([trained, fresh])
    timed = model.uses_time and model.supports_history
    if model.supports_history and (len(fresh) or (timed and user >= 0)):
        reason = UNKNOWN_USER_HISTORY if user_id is not None and user < 0 else None
        if not timed:
            return Target(user, seen, seen, False, reason, unknown)
        saved = model.user_history_times(user) if user >= 0 else None
        parts = [
            np.zeros(len(trained)) if saved is None else saved,
            [
                t
                for t, j in zip(logged_times or [request_time] * len(logged), logged_all, strict=True)
                if j >= 0
            ],
            [
                t
                for t, j in zip(given_times or [request_time] * len(given_all), given_all, strict=True)
                if j >= 0
            ],
        ]
        times = np.concatenate([np.asarray(p, dtype=np.float64) for p in parts]).astype(np.int64)
        return Target(user, seen, seen, False, reason, unknown, times, int(request_time))
    if user >= 0:
        return Target(user, None, seen, False, None, unknown)
    if user_id is not None:
        reason = UNKNOWN_USER
    elif len(fresh):
        reason = MODEL_NO_HISTORY
    else:
        reason = NO_KNOWN_ITEMS
    return Target(-1, None, seen, True, reason, unknown)


def score_candidates(
    bundle: ModelBundle,
    target: Target,
    raw: np.ndarray,
    mask: np.ndarray,
    distance: np.ndarray | None,
    location: Location | None,
    ranking: Ranking,
    ev_model: ExpectedValueModel | None,
) -> np.ndarray:
    """Re-score the model's ``raw`` scores for ``target`` (modified in place and returned): expected
    value, distance penalty, -inf outside the mask. The popularity fallback is never re-ranked by EV."""
    scores = raw
    if not target.popular and ranking == "expected_value":
        if ev_model is None:
            raise BadRequest(
                "ranking 'expected_value' needs calibrators; start the service with --calibration FILE"
            )
        value = bundle.catalog.value if bundle.catalog is not None else np.ones(bundle.n_items, np.float32)
        finite = np.isfinite(scores)
        scores[finite] = ev_model(scores[finite], value[finite])
    if location is not None and location.distance_penalty and distance is not None:
        scores -= np.float32(location.distance_penalty) * np.nan_to_num(distance, nan=0.0).astype(np.float32)
    scores[~mask | ~np.isfinite(scores)] = -np.inf
    return scores


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (indices, scores) of one score row, best first, equal scores by item index;
    ``-inf`` entries are never returned, so the result may be shorter than ``k``.

    Same contract as :func:`vitrina.models.topk`, which is built for many rows at once; for the
    single row of a request ``np.argpartition`` is several times cheaper (75 vs 430 µs of CPU at
    12k items, issue 16). A row that is mostly ``-inf`` (an ANN index scored only its candidates,
    or a narrow filter) is partitioned over its finite entries only: at 1.09M items with 200
    candidates 0.35 ms instead of 4.1 ms.
    """
    n = len(scores)
    k_eff = min(k, n)
    if k_eff <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    live = np.flatnonzero(scores > -np.inf)
    if len(live) <= k_eff:
        part = live
    elif len(live) < n // 2:
        part = live[np.argpartition(-scores[live], k_eff - 1)[:k_eff]]
    else:
        part = np.argpartition(-scores, k_eff - 1)[:k_eff] if k_eff < n else np.arange(n)
    val = scores[part]
    order = np.lexsort((part, -val))
    idx, val = part[order].astype(np.int64), val[order].astype(np.float32)
    keep = val > -np.inf
    return idx[keep], val[keep]


def explore(
    scores: np.ndarray, k: int, exploration: Exploration, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw up to ``k`` items slot by slot, without replacement, from the finite-score candidates.

    Each slot calls :func:`~vitrina.experiments.ope.epsilon_greedy` on the remaining candidates in
    score order, or :func:`~vitrina.experiments.ope.softmax_sample` on their scores. Returns
    ``(indices, scores, propensities)`` in slot order; a propensity is the probability of that item
    at that slot given the items above it, so over the remaining candidates each slot's sum is 1.
    """
    if exploration.policy == "off":
        raise ValueError("explore() needs an exploration policy; use top_k() for 'off'")
    cand = np.flatnonzero(np.isfinite(scores))
    cand = cand[np.argsort(-scores[cand], kind="stable")]
    picked: list[int] = []
    props: list[float] = []
    for _ in range(min(k, cand.size)):
        if exploration.policy == "epsilon":
            item, prop = epsilon_greedy(cand, exploration.epsilon, rng)
        else:
            item, prop = softmax_sample(cand, scores[cand], exploration.temperature, rng)
        picked.append(int(item))  # type: ignore[call-overload]
        props.append(prop)
        cand = cand[cand != item]
    idx = np.asarray(picked, dtype=np.int64)
    return idx, scores[idx], np.asarray(props, dtype=np.float64)


def _carousel_value(val: np.ndarray, discount: np.ndarray) -> float:
    return float((val * discount[: len(val)]).sum())


def build_slate(
    scores: np.ndarray, masks: Sequence[np.ndarray], k: int, *, allow_duplicates: bool, rank_carousels: bool
) -> list[tuple[int, float, np.ndarray, np.ndarray, int]]:
    """Fill carousels greedily from one score vector: ``(carousel, value, idx, scores, n_eligible)``.

    With ``rank_carousels`` the carousel whose top-k has the largest discounted score sum
    (weights ``1/log2(rank+1)``) is placed first, its items are taken out of the pool unless
    duplicates are allowed, and the rest are re-evaluated on what is left; otherwise carousels
    are filled in request order.
    """
    cand = np.flatnonzero(np.isfinite(scores))
    sub = scores[cand]
    sub_masks = [m[cand] for m in masks]
    free = np.ones(len(cand), dtype=bool)
    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    remaining = list(range(len(masks)))
    out = []
    while remaining:
        entries = []
        for c in remaining if rank_carousels else remaining[:1]:
            eligible = sub_masks[c] & free
            idx, val = top_k(np.where(eligible, sub, -np.inf).astype(np.float32), k)
            entries.append((c, _carousel_value(val, discount), cand[idx], val, int(eligible.sum())))
        best = max(entries, key=lambda e: e[1])
        out.append(best)
        remaining.remove(best[0])
        if not allow_duplicates:
            free[np.isin(cand, best[2])] = False
    return out
