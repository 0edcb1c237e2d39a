"""How the norm-banded ANN index answers on learned vectors, without building it: the share of each
user's exact top-k lying in the exact head (the ``exact_below`` largest-norm items, scanned exactly)
and how many items the Cauchy-Schwarz stop leaves to consider.

    vitrina datasets synth --events 8000000 --users 400000 --items 1300000 --seed 0 --output big.parquet
    python benchmarks/bench_ann_norm_head.py --log big.parquet

Every exact top-k item inside the head is always served (the head is scored exactly and candidates
are ranked by exact scores), so the mean share is a lower bound on the index's recall@k. A query
whose k-th score ``s_k`` satisfies ``s_k >= |q| |x|`` for every item after the head stops there,
i.e. is answered exactly. Vectors as in ``bench_ann_learned.py`` (ALS factors, seen items masked).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from vitrina.models.implicit_mf import ALS


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--log", type=Path, required=True, help="Parquet from `vitrina datasets synth`")
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--head", type=int, default=20_000, help="AnnIndex exact_below")
    args = parser.parse_args()

    t = time.perf_counter()
    log = pl.read_parquet(args.log, columns=["user_id", "item_id", "timestamp"]).with_columns(
        weight=pl.lit(1.0)
    )
    model = ALS(factors=args.factors, iterations=args.iterations).fit(log)
    vectors = model.item_vectors()
    fit_s = time.perf_counter() - t
    norms = np.linalg.norm(vectors, axis=1)
    head = np.zeros(len(vectors), dtype=bool)
    head[np.argsort(-norms, kind="stable")[: args.head]] = True
    rng = np.random.default_rng(0)
    users = rng.choice(len(model.users_), size=min(args.queries, len(model.users_)), replace=False)
    matrix = torch.from_numpy(vectors)
    in_head, to_consider = [], []
    for user, q in zip(users, model.user_vectors(users), strict=True):
        scores = torch.mv(matrix, torch.from_numpy(q)).numpy()
        scores[model.seen_[int(user)].indices] = -np.inf
        top = np.argpartition(-scores, args.k)[: args.k]
        in_head.append(head[top].mean())
        to_consider.append(int((norms >= scores[top].min() / np.linalg.norm(q)).sum()))
    need = np.array(to_consider)
    p50, p99, top_norm = np.percentile(norms, [50, 99, 100])
    print(
        f"{args.log.name}: {len(vectors)} items; ALS d={args.factors} ({args.iterations} it.) {fit_s:.0f} s; "
        f"item norm p50 {p50:.4f}, p99 {p99:.4f}, max {top_norm:.2f}; {len(users)} users, k={args.k}\n"
        f"recall@{args.k} lower bound (exact top-{args.k} inside the {args.head:,}-item head): "
        f"{np.mean(in_head):.4f}\n"
        f"queries stopped inside the head (answered exactly): {np.mean(need <= args.head):.3f}; "
        f"items the stop leaves to consider p50 / p90 / p99 / max: "
        f"{' / '.join(f'{v:.0f}' for v in np.percentile(need, [50, 90, 99, 100]))}"
    )


if __name__ == "__main__":
    main()
