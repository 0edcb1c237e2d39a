"""ANN on item vectors learned by a model from a synthetic log: recall@k of the served list against
exact scoring, with and without a category filter, and the speed of the exact scan.

    vitrina datasets synth --events 8000000 --users 400000 --items 1300000 --output synth.parquet
    python benchmarks/bench_ann_learned.py --log synth.parquet --model als:factors=32,iterations=5
    python benchmarks/bench_ann_learned.py --log synth.parquet --normalise   # near-equal norms
    python benchmarks/bench_ann_learned.py --log synth.parquet --model esasrec:epochs=1

A model is fitted on the log (``--model``, ALS by default: its item factors are the vectors, its
user factors the queries; any model with ``item_vectors``/``user_vectors``); the catalogue beside
the log (``synth.items.parquet``) gives the categories. ``--normalise`` L2-normalises the item
vectors (cosine retrieval): every item then has the same norm, so the norm bands and their
Cauchy-Schwarz stop cannot help and the graphs do all the work. The spread of the item norms and
the memory the index adds beside the item matrix are printed. For a sample of users the
served list is built as the service builds it (``ModelBundle.scores``: seen items masked, the index
widening its fetch when they hide its nearest candidates) and compared with ``AnnIndex.exact``:

- no filter; a category filter keeping about 1% of the catalogue, as served (a mask that small is
  scored exactly, below ``exact_below``) and with the index forced (``exact_below=0``);
- the exact scan over all items (one float32 matrix-vector product read in place, then a partial
  selection) against the time to read the item matrix once (``matrix.sum()``, the memory-bandwidth
  bound), and a bfloat16 copy of the matrix (torch) with its recall@k against float32.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import polars as pl
import torch
from threadpoolctl import threadpool_limits

from vitrina.evaluation.config import parse_models
from vitrina.models.registry import make_model
from vitrina.serving.ann import AnnIndex, exact_topk
from vitrina.serving.bundle import ANN_DIR


def _median_ms(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def _peak_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def served_recall(
    index: AnnIndex, queries: np.ndarray, seen: list[np.ndarray], base: np.ndarray, k: int
) -> tuple[float, np.ndarray]:
    """Mean recall@k of the served list (``ModelBundle.scores`` + cut) against exact; latencies in ms."""
    hits, lat = 0, []
    for q, s in zip(queries, seen, strict=True):
        allowed = base.copy()
        allowed[s] = False
        t = time.perf_counter()
        idx, val = index.search(q, k, allowed)
        served = idx[np.argsort(-val, kind="stable")[:k]]
        lat.append(time.perf_counter() - t)
        exact, _ = index.exact(q, k, allowed)
        hits += len(set(served[served >= 0].tolist()) & set(exact[exact >= 0].tolist()))
    return hits / (len(queries) * k), np.array(lat) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--log", type=Path, required=True, help="Parquet from `vitrina datasets synth`")
    parser.add_argument("--model", default="als:factors=32,iterations=5", help="model spec, as --models")
    parser.add_argument("--normalise", action="store_true", help="L2-normalise the item vectors")
    parser.add_argument(
        "--save-model",
        type=Path,
        help="save the fitted model here, with its index unless --normalise (`vitrina serve --ann` uses it)",
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--expansion-search", default="256", help="comma-separated HNSW search widths")
    parser.add_argument("--threads", type=int, default=0, help="HNSW build threads (0: all cores)")
    parser.add_argument("--exact-only", action="store_true", help="skip the HNSW index: exact scan only")
    parser.add_argument("--share", type=float, default=0.01, help="catalogue share the category filter keeps")
    args = parser.parse_args()

    t = time.perf_counter()
    log = pl.read_parquet(args.log, columns=["user_id", "item_id", "timestamp"]).with_columns(
        weight=pl.lit(1.0)
    )
    (run,) = parse_models(args.model)
    model = make_model(run.name, run.params).fit(log)
    fit_s = time.perf_counter() - t
    if args.save_model:
        model.save(args.save_model)
    vectors = np.ascontiguousarray(model.item_vectors(), dtype=np.float32)
    if args.normalise:
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    n_items, dim = vectors.shape
    norms = np.linalg.norm(vectors, axis=1)
    p50, p99, top = np.percentile(norms, 50), np.percentile(norms, 99), norms.max()
    catalog = pl.read_parquet(args.log.with_name(args.log.stem + ".items.parquet"))
    category = (
        pl.DataFrame({"item_id": model.items_.external_ids})
        .join(catalog.select("item_id", "category"), on="item_id", how="left")["category"]
        .to_numpy()
    )
    sizes = pl.Series(category).value_counts()
    target = args.share * n_items
    chosen = sizes.sort(pl.col("count").cast(pl.Float64).sub(target).abs())[0, 0]
    in_category = category == chosen

    t = time.perf_counter()
    index = None if args.exact_only else AnnIndex(vectors, threads=args.threads)
    build_s = time.perf_counter() - t
    if index is not None and args.save_model and not args.normalise:
        index.save(args.save_model / ANN_DIR)
    sizes = [] if index is None else [b - a for a, b in index.bands]
    bands = f" ({len(sizes)} norm bands: {sizes} items)" if sizes else ""
    extra = "" if index is None else f"; index beside the matrix {index.nbytes / 1e6:.0f} MB"
    rng = np.random.default_rng(0)
    users = rng.choice(len(model.users_), size=min(args.queries, len(model.users_)), replace=False)
    queries = model.user_vectors(users)
    seen = [model.seen_[int(u)].indices for u in users]
    print(
        f"{args.log.name}: {log.height} events, {len(model.users_)} users, {n_items} items; "
        f"{args.model}{' (normalised)' if args.normalise else ''} d={dim} fit {fit_s:.0f} s; "
        f"item norm p50 {p50:.4g} p99 {p99:.4g} max {top:.4g} (p50/max {p50 / top:.3f}); "
        f"HNSW build {build_s:.0f} s{bands}; item matrix {vectors.nbytes / 1e6:.0f} MB{extra}; "
        f"peak RSS {_peak_gb():.2f} GB; "
        f"{os.cpu_count()} CPUs; {len(users)} users, k={args.k}\n",
        flush=True,
    )
    if index is not None:
        print("| filter | path | ef_search | recall@k vs exact | p50 ms | p99 ms |")
        print("|---|---|---|---|---|---|", flush=True)
        small = f"category {chosen}: {in_category.mean():.2%} of items"
        served = index.exact_below
        cases = [("none", np.ones(n_items, dtype=bool), served), (small, in_category, served)]
        cases += [(small, in_category, 0)]  # the index forced on
        for ef in (int(x) for x in args.expansion_search.split(",")):
            index.expansion_search = ef
            for label, base, exact_below in cases:
                index.exact_below = exact_below
                recall, lat = served_recall(index, queries, seen, base, args.k)
                path = "index" if base.sum() > exact_below else "exact (mask below exact_below)"
                p50, p99 = np.median(lat), np.percentile(lat, 99)
                print(f"| {label} | {path} | {ef} | {recall:.4f} | {p50:.2f} | {p99:.2f} |", flush=True)

    repeat = 20
    read_ms = _median_ms(lambda: vectors.sum(), repeat)
    exact_ms = _median_ms(lambda: exact_topk(vectors, queries[0], args.k), repeat)
    batch = queries[:64]
    batch_ms = _median_ms(lambda: vectors @ batch.T, 5) / len(batch)
    half = torch.from_numpy(vectors).to(torch.bfloat16)
    bf16_ms = _median_ms(
        lambda: torch.topk(half @ torch.from_numpy(queries[0]).to(torch.bfloat16), args.k), repeat
    )
    hits = 0
    for q in queries:
        exact, _ = exact_topk(vectors, q, args.k)
        approx = torch.topk((half @ torch.from_numpy(q).to(torch.bfloat16)).float(), args.k).indices.numpy()
        hits += len(set(exact.tolist()) & set(approx.tolist()))
    gbs = vectors.nbytes / read_ms / 1e6
    # where the exact scan's time goes: the product alone (torch, numpy with one BLAS thread) and
    # the selection of the top k from a score row
    q0 = torch.from_numpy(queries[0])
    tmv_ms = _median_ms(lambda: torch.mv(torch.from_numpy(vectors), q0), repeat)
    with threadpool_limits(1, "blas"):
        np_ms = _median_ms(lambda: vectors @ queries[0], repeat)
    row = vectors @ queries[0]
    select_ms = _median_ms(lambda: np.argpartition(row, len(row) - args.k)[len(row) - args.k :], repeat)
    print(
        f"\nproduct only: torch.mv {tmv_ms:.1f} ms, numpy (one BLAS thread) {np_ms:.1f} ms; "
        f"top-{args.k} selection (argpartition) {select_ms:.1f} ms",
        flush=True,
    )
    print(
        f"\nexact scan of {n_items} x {dim} float32 ({vectors.nbytes / 1e6:.0f} MB): "
        f"{exact_ms:.1f} ms per query; reading the matrix once: {read_ms:.1f} ms ({gbs:.1f} GB/s) -> "
        f"{exact_ms / read_ms:.2f}x the bandwidth bound; 64 queries in one product: "
        f"{batch_ms:.2f} ms per query; bfloat16 copy (torch): {bf16_ms:.1f} ms, "
        f"recall@{args.k} vs float32 {hits / (len(queries) * args.k):.4f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
