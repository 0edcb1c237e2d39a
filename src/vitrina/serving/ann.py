"""Approximate retrieval for large catalogues (usearch HNSW) with exact re-ranking.

Items are ordered by vector norm, largest first (a permutation: the index shares the caller's item
matrix and copies only the head's rows), and cut into **norm bands**: a head of the
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

``save`` / ``load`` / ``cached`` keep a built index on disk (graphs memory-mapped on load), checked
against the item vectors it was built from and the checksums of its files.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

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
        self._layout(item_vectors, exact_below, band_ratio)
        self.oversample = oversample
        #: what a saved index must have been built with to be reused (:meth:`cached`)
        self.params = {
            "dtype": dtype,
            "connectivity": connectivity,
            "expansion_add": expansion_add,
            "exact_below": exact_below,
            "band_ratio": band_ratio,
        }
        self.graphs: list[Index | None] = []
        for a, b in self.bands:
            if b - a <= exact_below:
                self.graphs.append(None)
                continue
            extra = np.sqrt(np.maximum(self.norms[a] ** 2 - self.norms[a:b] ** 2, 0.0))[:, None]
            graph = Index(
                ndim=self.vectors.shape[1] + 1,
                metric="l2sq",
                dtype=dtype,
                connectivity=connectivity,
                expansion_add=expansion_add,
                expansion_search=expansion_search,
            )
            rows = self.order[a:b]  # keys are item indices
            graph.add(rows.astype(np.uint64), np.hstack([self.vectors[rows], extra]), threads=threads)
            self.graphs.append(graph)

    def _layout(self, item_vectors: np.ndarray, exact_below: int, band_ratio: float) -> None:
        """Norm order, bands and the head's copy: cheap, recomputed when a saved index is loaded."""
        # the caller's matrix, in item order and not copied (a float32 C-contiguous input is shared):
        # a norm-sorted copy beside the model's own would double the largest array (139 MB at 1M x 32)
        self.vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        norms = np.linalg.norm(self.vectors, axis=1)
        #: sorted position -> item index (largest norm first)
        self.order = np.argsort(-norms, kind="stable")
        self.norms = norms[self.order]
        self.exact_below = exact_below
        self.bands = _bands(self.norms, exact_below, band_ratio)
        #: the exact head's rows, contiguous (scanned by every query): the only copied vectors
        self.head = np.ascontiguousarray(self.vectors[self.order[: self.bands[0][1]]])

    def save(self, directory: str | Path) -> None:
        """Write the graphs and a manifest (build parameters, bands, checksums of the item matrix and
        of every graph file) into ``directory``, atomically: a 1M-item index takes minutes to build,
        seconds to load."""
        directory = Path(directory)
        tmp = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            graphs: dict[str, str] = {}
            for j, graph in enumerate(self.graphs):
                if graph is not None:
                    graph.save(tmp / f"band-{j}.usearch")
                    graphs[str(j)] = _sha256_file(tmp / f"band-{j}.usearch")
            manifest = {
                "params": self.params,
                "oversample": self.oversample,
                "expansion_search": self.expansion_search,
                "bands": self.bands,
                "vectors_sha256": _sha256(self.vectors),
                "graphs": graphs,
            }
            (tmp / _MANIFEST).write_text(json.dumps(manifest))
            shutil.rmtree(directory, ignore_errors=True)
            tmp.rename(directory)  # another process saving the same index at once: one rename wins
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(cls, directory: str | Path, item_vectors: np.ndarray) -> AnnIndex:
        """A saved index for these item vectors, its graphs memory-mapped (worker processes share
        them); ``ValueError`` if it was saved for other vectors or its files were altered."""
        directory = Path(directory)
        manifest = json.loads((directory / _MANIFEST).read_text())
        index = cls.__new__(cls)
        index._layout(item_vectors, manifest["params"]["exact_below"], manifest["params"]["band_ratio"])
        if manifest["vectors_sha256"] != _sha256(index.vectors):
            raise ValueError(f"{directory}: saved for other item vectors")
        if [list(band) for band in index.bands] != manifest["bands"]:
            raise ValueError(f"{directory}: its bands do not match these vectors")
        index.oversample = float(manifest["oversample"])
        index.params = dict(manifest["params"])
        index.graphs = []
        for j, (a, b) in enumerate(index.bands):
            digest = manifest["graphs"].get(str(j))
            if digest is None:
                index.graphs.append(None)
                continue
            file = directory / f"band-{j}.usearch"
            if _sha256_file(file) != digest:  # checked before usearch parses the file
                raise ValueError(f"{file}: checksum mismatch")
            graph = Index.restore(file, view=True)
            if graph is None or len(graph) != b - a:
                raise ValueError(f"{file}: not the graph of band {j}")
            index.graphs.append(graph)
        if manifest["expansion_search"] is not None:
            index.expansion_search = int(manifest["expansion_search"])
        return index

    @classmethod
    def cached(cls, item_vectors: np.ndarray, directory: str | Path | None, **params: Any) -> AnnIndex:
        """The index saved in ``directory`` when it was built from these vectors with these
        ``params`` (as :class:`AnnIndex` takes them); otherwise a new one, saved there if the
        directory can be written (a read-only model directory only costs the build)."""
        if directory is None:
            return cls(item_vectors, **params)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            index = cls.load(directory, item_vectors)
            wanted = {k: params[k] for k in index.params if k in params}
            if all(index.params[k] == v for k, v in wanted.items()):
                if "expansion_search" in params:
                    index.expansion_search = params["expansion_search"]
                if "oversample" in params:
                    index.oversample = params["oversample"]
                return index
        index = cls(item_vectors, **params)
        with contextlib.suppress(OSError):
            index.save(directory)
        return index

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def nbytes(self) -> int:
        """Bytes the index holds beyond the item matrix it shares: the permutation, the sorted norms,
        the head's copy and the graphs (usearch keeps its own augmented vectors beside the links)."""
        graphs = sum(int(g.memory_usage) for g in self.graphs if g is not None)
        return self.order.nbytes + self.norms.nbytes + self.head.nbytes + graphs

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
        return exact_topk(self.vectors, query, n, None if allowed is None else np.flatnonzero(allowed))

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
        idx, val = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        for j, ((a, b), graph) in enumerate(zip(self.bands, self.graphs, strict=True)):
            if len(val) >= n and val[n - 1] >= q_norm * self.norms[a]:
                break  # no item of this band or later can score above the n-th found
            rows = self.order[a:b]
            band_mask = None if allowed is None else allowed[rows]  # only the bands visited
            m = b - a if band_mask is None else int(band_mask.sum())
            if m == 0:
                continue
            if j == 0:  # the exact head, scanned in its contiguous copy
                p, v = exact_topk(self.head, q, n, None if band_mask is None else np.flatnonzero(band_mask))
                i, v = np.where(p >= 0, rows[np.maximum(p, 0)], -1), v
            elif graph is None or m <= self.exact_below:
                i, v = exact_topk(self.vectors, q, n, rows if band_mask is None else rows[band_mask])
            else:
                i, v = self._probe(graph, q, n, rows, allowed, m)
            idx, val = _merge(idx, val, i[i >= 0], v[i >= 0], n)
        if len(idx) < n:
            idx = np.append(idx, np.full(n - len(idx), -1, dtype=np.int64))
            val = np.append(val, np.full(n - len(val), -np.inf, dtype=np.float32))
        return idx, val

    def _probe(
        self,
        graph: Index,
        q: np.ndarray,
        n: int,
        rows: np.ndarray,
        allowed: np.ndarray | None,
        m: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` allowed items of one band (its item indices ``rows``, ``m`` of them allowed):
        over-fetch from its graph and filter, widen when too few survive, scan the band's allowed
        rows when the fetch grows too large."""
        size = len(rows)
        padded = np.append(q, np.float32(0.0))
        fetch = math.ceil(n * self.oversample * size / m)
        for _ in range(3):
            if fetch > size // 4:
                break
            keys = graph.search(padded, fetch).keys.astype(np.int64)
            if allowed is not None:
                keys = keys[allowed[keys]]
            if len(keys) >= min(n, m):
                return exact_topk(self.vectors, q, n, keys)
            fetch *= 4
        return exact_topk(self.vectors, q, n, rows if allowed is None else rows[allowed[rows]])


_MANIFEST = "manifest.json"


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(array)).cast("B")).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


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
