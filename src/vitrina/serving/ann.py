"""Approximate retrieval for large catalogues (usearch HNSW) with exact re-ranking.

Inner-product search is reduced to nearest-neighbour search: items are indexed augmented with
``sqrt(M^2 - |x|^2)`` (``M`` the largest item norm) and queries with 0, which HNSW handles far
better than raw inner products (measured: recall@100 0.60 with usearch's inner-product metric
against 0.97 augmented, same graph). The defaults (float32, 32 links per node, search width
1024) were chosen on a 200k-item probe for recall@100 ≈ 0.97 at ~1.5 ms per query; ``f16``
halves memory for about 2 points of recall. ``search`` re-scores the candidates exactly.

Business-rule masks are honoured before the cut: when the mask leaves few items
(``exact_below``) they are all scored exactly; otherwise the index is asked once for enough
candidates that, at the mask's pass rate, about ``oversample`` times the requested number
survive. There is no retry loop: if fewer survive, the caller reports it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from usearch.index import Index

from vitrina.models._topk import topk


@runtime_checkable
class EmbeddingModel(Protocol):
    """A model whose score is ``query_vector · item_vector`` (what ANN retrieval needs)."""

    def item_vectors(self) -> np.ndarray:
        """``n_items x d`` float32."""
        ...

    def user_vectors(self, user_idx: np.ndarray) -> np.ndarray:
        """``len(user_idx) x d`` query vectors for known users."""
        ...

    def history_vectors(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """``len(histories) x d`` query vectors for item-index histories."""
        ...


class AnnIndex:
    """HNSW over item vectors; ``search`` returns exact scores of approximate candidates."""

    def __init__(
        self,
        item_vectors: np.ndarray,
        *,
        dtype: str = "f32",
        connectivity: int = 32,
        expansion_add: int = 256,
        expansion_search: int = 1024,
        exact_below: int = 20_000,
        oversample: float = 1.5,
        threads: int = 0,
    ) -> None:
        self.vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        if not self.vectors.flags.writeable:  # e.g. loaded from safetensors; torch views need writable
            self.vectors = self.vectors.copy()
        self.exact_below = exact_below
        self.oversample = oversample
        norms = np.linalg.norm(self.vectors, axis=1)
        extra = np.sqrt(np.maximum(norms.max() ** 2 - norms**2, 0.0))[:, None]
        self.index = Index(
            ndim=self.vectors.shape[1] + 1,
            metric="l2sq",
            dtype=dtype,
            connectivity=connectivity,
            expansion_add=expansion_add,
            expansion_search=expansion_search,
        )
        keys = np.arange(len(self.vectors), dtype=np.uint64)
        self.index.add(keys, np.hstack([self.vectors, extra]).astype(np.float32), threads=threads)

    def __len__(self) -> int:
        return len(self.vectors)

    def exact(
        self, query: np.ndarray, n: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Brute-force top-``n`` (indices, scores) among ``allowed`` items; -1 pads missing slots.

        Without a mask the item matrix is read once in place (no gathered copy): a matrix-vector
        product bound by memory bandwidth, then a partial selection of ``n``."""
        return self._rerank(query, None if allowed is None else np.flatnonzero(allowed), n)

    def search(
        self, query: np.ndarray, n: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``n`` among ``allowed`` items, exactly re-scored; -1 pads missing slots."""
        n_allowed = len(self) if allowed is None else int(allowed.sum())
        if n_allowed <= self.exact_below:
            return self.exact(query, n, allowed)
        fetch = min(len(self), math.ceil(n * self.oversample * len(self) / n_allowed))
        padded = np.append(np.asarray(query, dtype=np.float32), np.float32(0.0))
        keys = self.index.search(padded, fetch).keys.astype(np.int64)
        if allowed is not None:
            keys = keys[allowed[keys]]
        return self._rerank(query, keys, n)

    def _rerank(self, query: np.ndarray, cand: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray]:
        return exact_topk(self.vectors, query, n, cand)


def exact_topk(
    vectors: np.ndarray, query: np.ndarray, n: int, cand: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``n`` (indices, scores) of ``vectors @ query`` among the rows ``cand`` (None: all,
    read in place); -1 pads missing slots."""
    q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
    # torch's matrix-vector product, not numpy's: on a busy machine OpenBLAS's thread hand-off made
    # a 26k-item scan 38 ms instead of 0.24 ms (docs/benchmarks.md, "ANN on learned vectors")
    scores = torch.mv(torch.from_numpy(vectors if cand is None else vectors[cand]), q).numpy()
    cand = np.arange(len(scores)) if cand is None else cand
    if len(scores) > 4 * n:  # select first: topk() sorts a negated copy of its whole row
        keep = np.argpartition(scores, len(scores) - n)[len(scores) - n :]
        cand, scores = cand[keep], scores[keep]
    pos, val = topk(scores[None, :], n)
    idx = np.where(pos[0] >= 0, cand[np.maximum(pos[0], 0)], -1) if len(cand) else pos[0]
    return idx, val[0]
