"""Seconds per metric on an Amazon-Beauty-sized problem: 22,363 users x 12,101 items at k=10.

Run ``python benchmarks/bench_metrics.py``. Top-k lists are random; truth holds one held-out item
per user (leave-one-out, as in the S3-Rec Beauty split); ILD uses Beauty's 637 item attributes
when ``amazon-beauty/s3rec/Beauty_item2attributes.json`` is under the data home
(``$VITRINA_DATA_HOME``), else a random one-hot matrix of the same shape and density.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from vitrina.data.datasets import data_home
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

N_USERS, N_ITEMS, N_ATTRS, K, REPEATS = 22_363, 12_101, 637, 10, 3
ATTRIBUTES = data_home() / "amazon-beauty" / "s3rec" / "Beauty_item2attributes.json"


def random_lists(rng: np.random.Generator, n_users: int, n_items: int, k: int) -> np.ndarray:
    """Distinct random items per row, redrawing the few rows that repeat an item."""
    lists = rng.integers(0, n_items, size=(n_users, k))
    while True:
        ordered = np.sort(lists, axis=1)
        bad = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        if not bad.any():
            return lists
        lists[bad] = rng.integers(0, n_items, size=(int(bad.sum()), k))


def attribute_matrix(rng: np.random.Generator) -> tuple[sp.csr_matrix, str]:
    """Items x attributes one-hot CSR: Beauty's real attributes if present, else random."""
    if ATTRIBUTES.exists():
        raw = json.loads(ATTRIBUTES.read_text())
        rows = np.concatenate([np.full(len(v), int(item) - 1) for item, v in raw.items()])
        cols = np.concatenate([np.asarray(v) - 1 for v in raw.values()])
        shape = (N_ITEMS, int(cols.max()) + 1)
        return sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=shape), "Beauty attributes"
    rows = np.repeat(np.arange(N_ITEMS), 4)
    cols = rng.integers(0, N_ATTRS, size=rows.size)
    matrix = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(N_ITEMS, N_ATTRS))
    matrix.data[:] = 1.0
    return matrix, "random attributes"


def best_of(fn: Callable[[], object]) -> float:
    """Fastest of ``REPEATS`` wall-clock runs, in seconds."""
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    popularity = np.minimum(rng.zipf(1.5, size=N_ITEMS), N_USERS)
    topk = random_lists(rng, N_USERS, N_ITEMS, K)
    held_out = rng.choice(N_ITEMS, size=N_USERS, p=popularity / popularity.sum())
    truth = sp.csr_matrix((np.ones(N_USERS), (np.arange(N_USERS), held_out)), shape=(N_USERS, N_ITEMS))
    expected = np.broadcast_to(np.argsort(-popularity, kind="stable")[:K], (N_USERS, K)).copy()
    attributes, source = attribute_matrix(rng)
    cases: dict[str, Callable[[], object]] = {
        "hit_rate": lambda: hit_rate(topk, truth),
        "recall": lambda: recall(topk, truth),
        "precision": lambda: precision(topk, truth),
        "ndcg": lambda: ndcg(topk, truth),
        "mrr": lambda: mrr(topk, truth),
        "average_precision": lambda: average_precision(topk, truth),
        "coverage": lambda: coverage(topk, N_ITEMS),
        "novelty": lambda: novelty(topk, popularity, N_USERS),
        "average_popularity": lambda: average_popularity(topk, popularity),
        "intra_list_diversity": lambda: intra_list_diversity(topk, attributes),
        "serendipity": lambda: serendipity(topk, truth, expected),
    }
    everything = {
        "compute_metrics (all)": lambda: compute_metrics(
            topk,
            truth,
            k=K,
            item_popularity=popularity,
            n_train_users=N_USERS,
            item_vectors=attributes,
            expected=expected,
        )
    }
    print(f"{N_USERS} users x {N_ITEMS} items, k={K}, ILD on {source} {attributes.shape}, best of {REPEATS}")
    print(f"{'metric':<24}{'seconds':>10}")
    total = 0.0
    for name, fn in cases.items():
        seconds = best_of(fn)
        total += seconds
        print(f"{name:<24}{seconds:>10.4f}")
    print(f"{'sum of the above':<24}{total:>10.4f}")
    for name, fn in everything.items():
        print(f"{name:<24}{best_of(fn):>10.4f}")


if __name__ == "__main__":
    main()
