"""Approximate retrieval for large catalogues (usearch HNSW) with exact re-ranking.

Items are kept sorted by vector norm, largest first, and cut into **norm bands**: a head of the
``exact_below`` largest-norm items, scored exactly, then bands whose norms stay within a factor
``band_ratio`` of the band's largest, each with its own HNSW graph. Inner-product search in a band
is reduced to nearest-neighbour search by augmenting items with ``sqrt(R^2 - |x|^2)`` (``R`` the
band's largest norm) and queries with 0. One global ``R`` fails on learned vectors, whose norms
spread over orders of magnitude (ALS factors on a synthetic log: median norm 0.3% of the largest):
most augmented points then crowd one pole and the graph search loses its way (recall@10 0.89 at
115k items). Bands are searched in order of norm and the search stops as soon as no item of the
next band can enter the list (Cauchy-Schwarz: ``q · x <= |q| |x|``), so on such vectors most
queries end in the exact head. ``search`` re-scores every candidate exactly.

Business-rule masks are honoured before the cut: when the mask leaves few items
(``exact_below``) they are all scored exactly. Otherwise each band is asked for enough candidates
that, at the band's pass rate, about ``oversample`` times the requested number survive; when fewer
survive the request is widened (x4, twice), and a band where that would exceed a quarter of its
items is scanned exactly, so a selective filter never shortens the list.
"""

from __future__ import annotations

import itertools
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
    """Norm-banded HNSW over item vectors; ``search`` returns exact scores of approximate candidates."""

    def __init__(
        self,
        item_vectors: np.ndarray,
        *,
        dtype: str = "f32",
        connectivity: int = 32,
        expansion_add: int = 256,
        expansion_search: int = 256,
        exact_below: int = 20_000,
        oversample: float = 1.5,
        band_ratio: float = 0.5,
        threads: int = 0,
    ) -> None:
        vectors = np.asarray(item_vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1)
        #: sorted position -> item index (largest norm first)
        self.order = np.argsort(-norms, kind="stable")
        self.vectors = np.ascontiguousarray(vectors[self.order])  # a fresh, writable copy
        self.norms = norms[self.order]
        self.exact_below = exact_below
        self.oversample = oversample
        self.bands = _bands(self.norms, exact_below, band_ratio)
        self.graphs: list[Index | None] = []
        for a, b in self.bands:
            if b - a <= exact_below:
                self.graphs.append(None)
                continue
            extra = np.sqrt(np.maximum(self.norms[a] ** 2 - self.norms[a:b] ** 2, 0.0))[:, None]
            graph = Index(
                ndim=vectors.shape[1] + 1,
                metric="l2sq",
                dtype=dtype,
                connectivity=connectivity,
                expansion_add=expansion_add,
                expansion_search=expansion_search,
            )
            keys = np.arange(a, b, dtype=np.uint64)  # keys are sorted positions
            graph.add(keys, np.hstack([self.vectors[a:b], extra]).astype(np.float32), threads=threads)
            self.graphs.append(graph)

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def expansion_search(self) -> int | None:
        """HNSW search width of every band's graph (None: no band has one)."""
        graphs = [g for g in self.graphs if g is not None]
        return int(graphs[0].expansion_search) if graphs else None

    @expansion_search.setter
    def expansion_search(self, value: int) -> None:
        for graph in self.graphs:
            if graph is not None:
                graph.expansion_search = value

    def exact(
        self, query: np.ndarray, n: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Brute-force top-``n`` (indices, scores) among ``allowed`` items; -1 pads missing slots.

        Without a mask the item matrix is read once in place (no gathered copy): a matrix-vector
        product bound by memory bandwidth, then a partial selection of ``n``."""
        cand = None if allowed is None else np.flatnonzero(allowed[self.order])
        return self._items(*exact_topk(self.vectors, query, n, cand))

    def search(
        self, query: np.ndarray, n: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``n`` among ``allowed`` items, exactly re-scored, best first; -1 pads
        missing slots. Never returns an item outside ``allowed``."""
        n_allowed = len(self) if allowed is None else int(allowed.sum())
        if n_allowed <= self.exact_below:
            return self.exact(query, n, allowed)
        q = np.ascontiguousarray(query, dtype=np.float32)
        q_norm = float(np.linalg.norm(q))
        mask = None if allowed is None else allowed[self.order]
        pos, val = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        for (a, b), graph in zip(self.bands, self.graphs, strict=True):
            if len(val) >= n and val[n - 1] >= q_norm * self.norms[a]:
                break  # no item of this band or later can score above the n-th found
            band_mask = None if mask is None else mask[a:b]
            m = b - a if band_mask is None else int(band_mask.sum())
            if m == 0:
                continue
            if graph is None or m <= self.exact_below:
                local = None if band_mask is None else np.flatnonzero(band_mask)
                p, v = exact_topk(self.vectors[a:b], q, n, local)
                p = np.where(p >= 0, p + a, -1)
            else:
                p, v = self._probe(graph, q, n, (a, b), band_mask, m)
            pos, val = _merge(pos, val, p[p >= 0], v[p >= 0], n)
        if len(pos) < n:
            pos = np.append(pos, np.full(n - len(pos), -1, dtype=np.int64))
            val = np.append(val, np.full(n - len(val), -np.inf, dtype=np.float32))
        return self._items(pos, val)

    def _probe(
        self,
        graph: Index,
        q: np.ndarray,
        n: int,
        band: tuple[int, int],
        band_mask: np.ndarray | None,
        m: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` allowed sorted positions of one band: over-fetch from its graph and filter,
        widen when too few survive, scan the band's allowed rows when the fetch grows too large."""
        a, b = band
        size = b - a
        padded = np.append(q, np.float32(0.0))
        fetch = math.ceil(n * self.oversample * size / m)
        for _ in range(3):
            if fetch > size // 4:
                break
            keys = graph.search(padded, fetch).keys.astype(np.int64)
            if band_mask is not None:
                keys = keys[band_mask[keys - a]]
            if len(keys) >= min(n, m):
                return exact_topk(self.vectors, q, n, keys)
            fetch *= 4
        local = None if band_mask is None else np.flatnonzero(band_mask)
        p, v = exact_topk(self.vectors[a:b], q, n, local)
        return np.where(p >= 0, p + a, -1), v

    def _items(self, pos: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sorted positions -> item indices (-1 stays -1)."""
        return np.where(pos >= 0, self.order[np.maximum(pos, 0)], -1), val


def _bands(norms: np.ndarray, head: int, ratio: float) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of the descending ``norms``: the first ``head`` rows, then bands that
    end where the norm falls below ``ratio`` times the band's first, each at least ``head`` rows
    (a shorter remainder joins the last band)."""
    n = len(norms)
    bounds = [0, min(head, n)]
    while bounds[-1] < n:
        a = bounds[-1]
        b = a + int(np.searchsorted(-norms[a:], -ratio * norms[a], side="right"))
        b = min(max(b, a + head), n)
        if n - b < head:
            b = n
        bounds.append(b)
    return list(itertools.pairwise(bounds))


def _merge(
    pos: np.ndarray, val: np.ndarray, p: np.ndarray, v: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best of two candidate lists, best first (equal scores: the earlier list first)."""
    pos, val = np.concatenate([pos, p]), np.concatenate([val, v]).astype(np.float32, copy=False)
    keep = np.argsort(-val, kind="stable")[:n]
    return pos[keep], val[keep]


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
