"""Every metric against a brute-force pure-Python reference on hypothesis-generated inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from vitrina.metrics import (
    average_popularity,
    average_precision,
    compute_metrics,
    coverage,
    hit_rate,
    intra_list_diversity,
    mrr,
    ndcg,
    novelty,
    precision,
    recall,
    serendipity,
)

NAN = float("nan")


def reference_accuracy(items: list[int], relevant: set[int], k: int) -> dict[str, float]:
    """Accuracy metrics for one user, written straight from the definitions."""
    if not relevant:
        return dict.fromkeys(("hr", "recall", "precision", "ndcg", "mrr", "map"), NAN)
    hits = [item >= 0 and item in relevant for item in items[:k]]
    n_hits, n_rel = sum(hits), len(relevant)
    dcg = sum(1 / math.log2(rank + 1) for rank, hit in enumerate(hits, start=1) if hit)
    idcg = sum(1 / math.log2(rank + 1) for rank in range(1, min(k, n_rel) + 1))
    ranks = [rank for rank, hit in enumerate(hits, start=1) if hit]
    ap = sum(sum(hits[:rank]) / rank for rank in ranks) / min(k, n_rel)
    return {
        "hr": float(n_hits > 0),
        "recall": n_hits / n_rel,
        "precision": n_hits / k,
        "ndcg": dcg / idcg,
        "mrr": 1 / ranks[0] if ranks else 0.0,
        "map": ap,
    }


def reference_novelty(items: list[int], pop: list[int], n_users: int) -> float:
    filled = [i for i in items if i >= 0]
    if not filled:
        return NAN
    return sum(-math.log2(max(pop[i], 1) / n_users) for i in filled) / len(filled)


def reference_arp(items: list[int], pop: list[int]) -> float:
    filled = [i for i in items if i >= 0]
    return sum(pop[i] for i in filled) / len(filled) if filled else NAN


def reference_ild(items: list[int], vectors: list[list[float]]) -> float:
    filled = [i for i in items if i >= 0]
    if len(filled) < 2:
        return NAN
    distances = []
    for a_pos, a in enumerate(filled):
        for b in filled[a_pos + 1 :]:
            norm_a = math.sqrt(sum(x * x for x in vectors[a]))
            norm_b = math.sqrt(sum(x * x for x in vectors[b]))
            dot = sum(x * y for x, y in zip(vectors[a], vectors[b], strict=True))
            cosine = dot / (norm_a * norm_b) if norm_a and norm_b else 0.0
            distances.append(1 - cosine)
    return sum(distances) / len(distances)


def reference_serendipity(items: list[int], relevant: set[int], expected: list[int], k: int) -> float:
    if not relevant:
        return NAN
    return sum(1 for i in items[:k] if i >= 0 and i in relevant and i not in expected) / k


def reference_mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else NAN


@st.composite
def problems(draw: st.DrawFn) -> dict:
    """Small random inputs: lists with -1 anywhere, truth with stored non-positive values."""
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(1, 8))
    width = draw(st.integers(1, 5))
    lists = []
    for _ in range(n_users):
        items = draw(st.lists(st.integers(0, n_items - 1), unique=True, max_size=width))
        slots = items + [-1] * (width - len(items))
        lists.append(draw(st.permutations(slots)))
    cells = st.sampled_from([None, None, 1.0, 2.5, 0.0, -1.0])
    grid = [[draw(cells) for _ in range(n_items)] for _ in range(n_users)]
    stored = [(u, i, v) for u, r in enumerate(grid) for i, v in enumerate(r) if v is not None]
    rows = np.array([u for u, _, _ in stored], dtype=np.int64)
    cols = np.array([i for _, i, _ in stored], dtype=np.int64)
    data = np.array([v for _, _, v in stored], dtype=float)
    n_train = draw(st.integers(1, 10))
    return {
        "topk": np.array(lists, dtype=np.int64),
        "truth": sp.csr_matrix((data, (rows, cols)), shape=(n_users, n_items)),
        "relevant": [{i for i, v in enumerate(r) if v is not None and v > 0} for r in grid],
        "k": draw(st.integers(1, width)),
        "pop": draw(st.lists(st.integers(0, n_train), min_size=n_items, max_size=n_items)),
        "n_train": n_train,
        "vectors": draw(
            st.integers(1, 4).flatmap(
                lambda d: st.lists(
                    st.lists(st.integers(-2, 2).map(float), min_size=d, max_size=d),
                    min_size=n_items,
                    max_size=n_items,
                )
            )
        ),
        "expected": draw(
            st.lists(
                st.lists(st.integers(-1, n_items - 1), min_size=2, max_size=2),
                min_size=n_users,
                max_size=n_users,
            )
        ),
    }


def close(actual: np.ndarray | float, expected: list[float] | float) -> bool:
    return actual == pytest.approx(expected, abs=1e-9, nan_ok=True)


FUNCTIONS = {
    "ndcg": ndcg,
    "hr": hit_rate,
    "recall": recall,
    "precision": precision,
    "mrr": mrr,
    "map": average_precision,
}


@settings(max_examples=150, deadline=None)
@given(problems())
def test_accuracy_matches_reference(p: dict) -> None:
    lists = p["topk"].tolist()
    refs = [reference_accuracy(items, rel, p["k"]) for items, rel in zip(lists, p["relevant"], strict=True)]
    for name, fn in FUNCTIONS.items():
        assert close(fn(p["topk"], p["truth"], k=p["k"]), [r[name] for r in refs]), name


@settings(max_examples=150, deadline=None)
@given(problems(), st.booleans())
def test_beyond_accuracy_matches_reference(p: dict, sparse_vectors: bool) -> None:
    k, pop, cut = p["k"], p["pop"], [items[: p["k"]] for items in p["topk"].tolist()]
    vectors = sp.csr_matrix(p["vectors"]) if sparse_vectors else np.array(p["vectors"])
    n_items = len(pop)
    filled = {i for items in cut for i in items if i >= 0}
    assert coverage(p["topk"], n_items, k=k) == len(filled) / n_items
    assert close(
        novelty(p["topk"], np.array(pop), p["n_train"], k=k),
        [reference_novelty(i, pop, p["n_train"]) for i in cut],
    )
    assert close(average_popularity(p["topk"], np.array(pop), k=k), [reference_arp(i, pop) for i in cut])
    assert close(intra_list_diversity(p["topk"], vectors, k=k), [reference_ild(i, p["vectors"]) for i in cut])
    expected = np.array(p["expected"], dtype=np.int64)
    ref = [
        reference_serendipity(i, r, e, k) for i, r, e in zip(cut, p["relevant"], p["expected"], strict=True)
    ]
    assert close(serendipity(p["topk"], p["truth"], expected, k=k), ref)


@settings(max_examples=100, deadline=None)
@given(problems())
def test_compute_metrics_matches_reference(p: dict) -> None:
    k, pop = p["k"], p["pop"]
    users = [u for u, rel in enumerate(p["relevant"]) if rel]
    cut = [p["topk"].tolist()[u][:k] for u in users]
    rel = [p["relevant"][u] for u in users]
    accuracy = [reference_accuracy(items, r, k) for items, r in zip(cut, rel, strict=True)]
    expected_lists = [p["expected"][u] for u in users]
    want = {f"{name}@{k}": reference_mean([a[name] for a in accuracy]) for name in FUNCTIONS}
    want[f"coverage@{k}"] = len({i for items in cut for i in items if i >= 0}) / len(pop)
    want[f"novelty@{k}"] = reference_mean([reference_novelty(i, pop, p["n_train"]) for i in cut])
    want[f"arp@{k}"] = reference_mean([reference_arp(i, pop) for i in cut])
    want[f"ild@{k}"] = reference_mean([reference_ild(i, p["vectors"]) for i in cut])
    want[f"serendipity@{k}"] = reference_mean(
        [reference_serendipity(i, r, e, k) for i, r, e in zip(cut, rel, expected_lists, strict=True)]
    )
    want["n_users_evaluated"] = len(users)
    got = compute_metrics(
        p["topk"],
        p["truth"],
        k=k,
        item_popularity=np.array(pop),
        n_train_users=p["n_train"],
        item_vectors=np.array(p["vectors"]),
        expected=np.array(p["expected"], dtype=np.int64),
    )
    assert list(got) == list(want)
    assert all(close(got[key], want[key]) for key in want), (got, want)
