"""Leave-one-out quality of the sequential transformers on an s3rec-format file (``user item item ...``).

Train = all but each user's last two events, validation = second-to-last (early stopping),
test = last, ranked over the full catalogue from the train + validation history (history items
excluded). Prints one JSON line per model with NDCG@10, HR@10, the training summary and peak RSS.

    python benchmarks/sequential_quality.py esasrec sasrec:epochs=50 --data PATH
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

# Before torch loads OpenMP: sleeping (not spinning) worker threads; on a shared, busy CPU spinning
# threads made a 2-thread epoch up to ~50x slower in our measurements (see docs/sequential.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import polars as pl
import torch

from vitrina.data.dataset import Dataset
from vitrina.models.registry import make_model

BEAUTY = Path("/work/shared/datasets/amazon-beauty/s3rec/Beauty.txt")


def load_loo(path: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(train, validation, test) interaction frames; the position in a line is the timestamp."""
    users, items, pos = [], [], []
    for line in path.read_text().splitlines():
        user, *seq = line.split()
        users += [int(user)] * len(seq)
        items += [int(i) for i in seq]
        pos += range(len(seq))
    df = pl.DataFrame({"user_id": users, "item_id": items, "timestamp": pos}).with_columns(weight=pl.lit(1.0))
    from_end = pl.col("timestamp").rank("ordinal", descending=True).over("user_id")
    return df.filter(from_end > 2), df.filter(from_end == 2), df.filter(from_end == 1)


def parse(spec: str) -> tuple[str, dict[str, str]]:
    name, _, rest = spec.partition(":")
    return name, dict(kv.split("=", 1) for kv in rest.split(",") if kv)


def evaluate(
    spec: str, data: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame], quiet: bool
) -> dict[str, object]:
    train, val, test = data
    name, params = parse(spec)
    model = make_model(name, {**params, **({"verbose": "false"} if quiet else {})})
    t0 = time.perf_counter()
    model.fit(Dataset.from_interactions(train), validation=val)
    fit_s = time.perf_counter() - t0
    ds = Dataset(train.head(0), model.users_, model.items_).subset(pl.concat([train, val]))
    test_ds = ds.subset(test)
    users = test_ds.user_idx
    t1 = time.perf_counter()
    top, _ = model.recommend_histories_indices([ds.sequence(int(u)) for u in users], 10)
    hit = top == test_ds.item_idx[:, None]
    rank = np.where(hit.any(1), hit.argmax(1), -1)
    summary = dict(model.training_summary_)
    summary["history"] = [
        {k: round(v, 5) for k, v in h.items() if k in ("epoch", "loss", "val_recall_at_10")}
        for h in summary["history"]
    ]
    return {
        "model": spec,
        "test_users": test.height,  # users whose test item is unknown to training count as misses
        "test_users_ranked": len(users),
        "ndcg@10": float((1 / np.log2(rank[rank >= 0] + 2.0)).sum() / test.height),
        "hr@10": float((rank >= 0).sum() / test.height),
        "fit_seconds": fit_s,
        "test_ranking_seconds": time.perf_counter() - t1,
        "summary": summary,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_avg": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="registry name with overrides, e.g. esasrec:n_factors=128")
    ap.add_argument("--data", type=Path, default=BEAUTY)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_loo(args.data)
    for spec in args.models:
        print(json.dumps(evaluate(spec, data, args.quiet)), flush=True)


if __name__ == "__main__":
    main()
