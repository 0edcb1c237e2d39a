"""Micro-batching of model calls: requests that reach the model in the same event-loop turn share one.

Under load many requests become ready in the same turn of the event loop (their sockets were
readable together). Each one resolves its user, history and mask, then waits here; a flush
scheduled with ``call_soon`` runs after all of them and scores them with one model call per bundle
(one forward pass and one ``hidden @ items.T`` matmul for a sequential model) instead of one each.
Nothing waits for a timer: a lone request is flushed in the very next turn, so batching adds no
latency at low load and grows with the load by itself.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import numpy as np

from vitrina.serving.bundle import ModelBundle
from vitrina.serving.ranking import Target

#: most score cells (rows x items) one batched call may allocate
MAX_BATCH_CELLS = 1 << 24


class _Pending(NamedTuple):
    bundle: ModelBundle
    target: Target
    future: asyncio.Future[np.ndarray]


def raw_scores(bundle: ModelBundle, target: Target, mask: np.ndarray, n_candidates: int) -> np.ndarray:
    """A fresh score row for one target: popularity for the fallback, else the model (or its ANN index)."""
    if target.popular:
        return bundle.popularity.copy()
    return bundle.scores(target.user, target.history, mask, n_candidates, target.times, target.request)


class ScoreBatcher:
    """Collects scoring requests until the end of the current event-loop turn, then scores each
    bundle's requests in one call (at most ``max_batch`` rows, fewer for very large catalogues)."""

    def __init__(self, max_batch: int = 64) -> None:
        self.max_batch = max_batch
        self._pending: list[_Pending] = []

    async def scores(
        self, bundle: ModelBundle, target: Target, mask: np.ndarray, n_candidates: int
    ) -> np.ndarray:
        """The model's scores for ``target`` (a row the caller may modify).

        The popularity fallback and ANN retrieval (which searches per request, under its mask)
        are answered at once, without batching.
        """
        if target.popular or bundle.ann is not None:
            return raw_scores(bundle, target, mask, n_candidates)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append(_Pending(bundle, target, future))
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        by_bundle: dict[int, list[_Pending]] = {}
        for p in pending:
            by_bundle.setdefault(id(p.bundle), []).append(p)
        for group in by_bundle.values():
            rows = max(1, min(self.max_batch, MAX_BATCH_CELLS // max(1, group[0].bundle.n_items)))
            for start in range(0, len(group), rows):
                self._score(group[start : start + rows])

    def _score(self, batch: list[_Pending]) -> None:
        try:
            scores = batch[0].bundle.scores_many(
                [(p.target.user, p.target.history) for p in batch],
                times=[p.target.times for p in batch],
                requests=[p.target.request for p in batch],
            )
        except Exception as exc:
            if len(batch) > 1:  # score one by one, so that only the failing request fails
                for p in batch:
                    self._score([p])
            elif not batch[0].future.done():
                batch[0].future.set_exception(exc)
            return
        for p, row in zip(batch, scores, strict=True):
            if not p.future.done():  # the request may have been cancelled meanwhile
                p.future.set_result(row)
