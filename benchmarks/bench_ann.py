"""ANN retrieval + exact re-ranking on a synthetic catalogue: recall@k against exact search, latency.

    python benchmarks/bench_ann.py                              # 1M items, d=32, 200 queries
    python benchmarks/bench_ann.py --items 200000 --dim 64

Item vectors are clustered Gaussians (as trained embeddings are), queries are drawn the same way.
Reports build time, recall@k of ``AnnIndex.search`` against ``AnnIndex.exact`` (brute force in
float32), and per-query latency percentiles, without a mask and with a 50% availability mask.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from vitrina.serving.ann import AnnIndex


def synthetic(n: int, dim: int, rng: np.random.Generator, clusters: int = 256) -> np.ndarray:
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    return centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)


def run(
    index: AnnIndex, queries: np.ndarray, k: int, allowed: np.ndarray | None
) -> tuple[float, np.ndarray, float]:
    hits, lat, exact_lat = 0, [], []
    for q in queries:
        t = time.perf_counter()
        exact, _ = index.exact(q, k, allowed)
        exact_lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        approx, _ = index.search(q, k, allowed)
        lat.append(time.perf_counter() - t)
        hits += len(set(exact[exact >= 0]) & set(approx[approx >= 0]))
    return hits / (len(queries) * k), np.array(lat) * 1e3, float(np.median(exact_lat) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument(
        "--expansion-search", default="1024,4096,8192", help="comma-separated search widths, one index"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    items = synthetic(args.items, args.dim, rng)
    queries = synthetic(args.queries, args.dim, rng)
    t = time.perf_counter()
    index = AnnIndex(items, exact_below=0)
    build = time.perf_counter() - t
    print(
        f"{args.items} items, d={args.dim}, f32 HNSW (M=32, ef_add=256), {os.cpu_count()} CPUs; "
        f"build {build:.1f} s; {args.queries} queries, k={args.k}\n",
        flush=True,
    )
    print("| ef_search | mask | recall@k | p50 ms | p99 ms | max ms | exact p50 ms |")
    print("|---|---|---|---|---|---|---|", flush=True)
    half = rng.random(args.items) < 0.5
    for ef in (int(x) for x in args.expansion_search.split(",")):
        index.expansion_search = ef
        for label, allowed in (("none", None), ("50% available", half)):
            recall, lat, exact = run(index, queries, args.k, allowed)
            p50, p99 = np.percentile(lat, [50, 99])
            print(
                f"| {ef} | {label} | {recall:.4f} | {p50:.2f} | {p99:.2f} | {lat.max():.2f} | {exact:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
