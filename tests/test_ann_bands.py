"""Norm-banded ANN (issue 11, part 7): bands partition the catalogue by norm, filters are never
violated, a too-selective filter falls back to an exact scan, and learned-like vectors (norms spread
over orders of magnitude) are retrieved with recall@10 >= 0.95."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vitrina.serving.ann import AnnIndex, _bands


def _learned_like(n: int, dim: int, seed: int) -> np.ndarray:
    """Clustered directions with log-normal norms (ALS factors: median norm ~1% of the largest)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(64, dim))
    v = centres[rng.integers(0, 64, n)] + 0.7 * rng.normal(size=(n, dim))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return (v * rng.lognormal(0.0, 1.5, size=(n, 1))).astype(np.float32)


@pytest.fixture(scope="module")
def index() -> AnnIndex:
    return AnnIndex(_learned_like(6_000, 16, 0), exact_below=500, threads=1)


def test_the_item_matrix_is_shared_not_copied() -> None:
    items = _learned_like(2_000, 8, 4)
    index = AnnIndex(items, exact_below=300, threads=1)
    assert index.vectors is items  # float32 C-contiguous: no copy of the matrix
    assert not np.shares_memory(index.head, items)  # the head alone is copied, in norm order
    np.testing.assert_array_equal(index.head, items[index.order[:300]])
    graphs = sum(int(g.memory_usage) for g in index.graphs if g is not None)
    assert index.nbytes == index.order.nbytes + index.norms.nbytes + 300 * 8 * 4 + graphs
    for q in items[:5]:  # the head settles these queries: the list is the exact one
        idx, val = index.search(q, 10)
        exact_idx, exact_val = index.exact(q, 10)
        assert idx.tolist() == exact_idx.tolist()
        np.testing.assert_allclose(val, exact_val, rtol=1e-6)


def test_bands_partition_the_catalogue_by_norm(index: AnnIndex) -> None:
    bounds = index.bands
    assert bounds[0] == (0, 500) and bounds[-1][1] == len(index)
    assert all(b0[1] == b1[0] for b0, b1 in itertools.pairwise(bounds))
    assert all(b - a >= 500 for a, b in bounds)
    assert np.all(np.diff(index.norms) <= 0)  # largest norm first
    assert [g is None for g in index.graphs] == [b - a <= 500 for a, b in bounds]
    assert len(bounds) > 3  # these norms span orders of magnitude: several graphs
    assert _bands(np.ones(10), 4, 0.5) == [(0, 4), (4, 10)]  # a short remainder joins the last band
    assert _bands(np.zeros(3), 4, 0.5) == [(0, 3)]


def test_recall_on_learned_like_vectors(index: AnnIndex) -> None:
    rng = np.random.default_rng(1)
    vectors = index.vectors
    hits = 0
    queries = vectors[rng.choice(len(vectors), 50, replace=False)]
    for q in queries:
        idx, val = index.search(q, 10)
        assert np.all(np.diff(val) <= 0) and np.all(idx >= 0)
        np.testing.assert_allclose(val, vectors[idx] @ q, rtol=1e-5)  # exact scores of the items
        hits += len(set(idx.tolist()) & set(np.argsort(-(vectors @ q))[:10].tolist()))
    assert hits / (10 * len(queries)) >= 0.95


def test_filter_is_never_violated(index: AnnIndex) -> None:
    rng = np.random.default_rng(2)
    vectors = index.vectors
    for q in vectors[rng.choice(len(vectors), 10, replace=False)]:
        allowed = rng.random(len(vectors)) < 0.5
        idx, _ = index.search(q, 20, allowed)
        assert allowed[idx].all()


def test_selective_filter_falls_back_to_an_exact_scan() -> None:
    # equal norms: a head and one graph band. Allowed: the 600 worst-scoring items of the band, more
    # than exact_below, so the graph is asked (and widened) but its nearest candidates are all
    # filtered out; the band is then scanned exactly, and the list is the exact one
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(3_000, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = AnnIndex(vectors, exact_below=100, threads=1)
    assert [g is None for g in index.graphs] == [True, False]
    for q in vectors[:5]:
        allowed = np.zeros(len(vectors), dtype=bool)
        allowed[np.argsort(vectors @ q)[:600]] = True
        idx, val = index.search(q, 10, allowed)
        exact_idx, exact_val = index.exact(q, 10, allowed)
        assert allowed[idx].all() and (idx >= 0).all()
        assert idx.tolist() == exact_idx.tolist()
        np.testing.assert_allclose(val, exact_val, rtol=1e-6)


def test_fewer_allowed_than_asked_pads() -> None:
    items = _learned_like(3_000, 8, 3)
    index = AnnIndex(items, exact_below=100, threads=1)
    allowed = np.zeros(len(items), dtype=bool)
    allowed[[5, 2_999]] = True
    index.exact_below = 0  # the banded path even for two allowed items
    idx, val = index.search(items[0], 4, allowed)
    assert sorted(idx[:2].tolist()) == [5, 2_999] and idx[2:].tolist() == [-1, -1]
    assert np.isneginf(val[2:]).all()
