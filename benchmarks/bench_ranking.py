"""Full-ranking throughput: scored (user, item) pairs per second for Popular, ALS and eSASRec.

Run ``python benchmarks/bench_ranking.py`` (defaults: a 2M-event synthetic log, 100k users, 50k
items; 20,000 users ranked against the whole catalogue at k = 10, seen items excluded). Prints wall
pairs/s and pairs per CPU-second (process CPU time over all threads): on a shared machine the second
says what the code does per core, the first what it did under the load at the time. ``--legacy``
also times the previous path (numpy matmul, a full isfinite pass, ``np.argpartition``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from vitrina.data.synth import SynthConfig, synth_events
from vitrina.models.base import Recommender
from vitrina.models.registry import make_model


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def legacy_rank(model: Recommender, users: np.ndarray, k: int) -> None:
    """The ranking loop before issue 11: copy, isfinite pass, mask, argpartition, lexsort."""
    step = max(1, (1 << 24) // len(model.items_))
    for start in range(0, len(users), step):
        batch = users[start : start + step]
        scores = np.array(model._score_users(batch), dtype=np.float32, copy=True)
        scores[~np.isfinite(scores)] = -np.inf
        seen = model.seen_[batch]
        scores[np.repeat(np.arange(len(batch)), np.diff(seen.indptr)), seen.indices] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(scores, part, axis=1)
        np.take_along_axis(part, np.lexsort((part, -vals), axis=1), axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--rank-users", type=int, default=20_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--models", default="popular,als,esasrec")
    parser.add_argument("--legacy", action="store_true")
    args = parser.parse_args()
    df = synth_events(SynthConfig(events=args.events, users=args.users, items=args.items, seed=0))
    fits = {
        "popular": {},
        "als": {"iterations": 3},
        "esasrec": {"epochs": 1, "patience": 1, "verbose": False},
    }
    print(
        f"{args.events:,} events; ranking {args.rank_users:,} users x {args.items:,} items at k={args.k}; "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'model':<10}{'path':<8}{'wall s':>8}{'CPU s':>8}{'Mpairs/s':>10}{'Mpairs/CPU-s':>14}")
    for name in args.models.split(","):
        model = make_model(name, fits[name])
        model.fit(df)  # one epoch / few iterations: ranking cost does not depend on the fit
        users = np.random.default_rng(0).choice(len(model.users_), args.rank_users, replace=False)
        pairs = len(users) * len(model.items_)
        paths = {"new": lambda m=model, u=users: m.recommend_indices(u, args.k)}
        if args.legacy:
            paths["legacy"] = lambda m=model, u=users: legacy_rank(m, u, args.k)
        for path, fn in paths.items():
            wall, cpu = timed(fn)
            print(
                f"{name:<10}{path:<8}{wall:>8.2f}{cpu:>8.2f}"
                f"{pairs / wall / 1e6:>10.0f}{pairs / cpu / 1e6:>14.0f}"
            )


if __name__ == "__main__":
    main()
