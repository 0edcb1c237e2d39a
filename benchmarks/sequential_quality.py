"""Leave-one-out quality of the sequential transformers on an s3rec-format file (``user item item ...``).

Test = each user's last event; validation (early stopping) = the second-to-last event of 2,048
random users (``--validation-users all``: of every user); train = the rest. Test users are ranked
over the full catalogue from their train + validation history (history items excluded).
Every model runs once per seed (``--seeds``, default 0,1,2: model initialisation, batches and
negatives; the split stays the seed-0 one). Prints one JSON line per run with NDCG@10, HR@10, the
training summary and peak RSS, then one line per model with the mean ± sd over the seeds.

    python benchmarks/sequential_quality.py esasrec sasrec:epochs=50 --data PATH --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# Before torch loads OpenMP: sleeping (not spinning) worker threads; on a shared, busy CPU spinning
# threads made a 2-thread epoch up to ~50x slower in our measurements (see docs/sequential.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import polars as pl
import torch

from vitrina.data.datasets import resolve
from vitrina.data.loaders import load_s3rec
from vitrina.data.splits import leave_one_out
from vitrina.evaluation.config import ModelRun, parse_models
from vitrina.evaluation.evaluate import build_truth, evaluate, history_dataset
from vitrina.models.registry import make_model

Parts = tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]


def load_loo(path: Path, validation_users: int | None) -> Parts:
    """(train, validation, test) of an S3-Rec file, by vitrina's leave-one-out split (validation
    on ``validation_users`` random users, seed 0, as ``vitrina benchmark``; None = every user)."""
    split = leave_one_out(load_s3rec(path), validation_users=validation_users)
    return split.train, split.validation, split.test


def run(spec: ModelRun, data: Parts, quiet: bool) -> dict[str, Any]:
    train, val, test = data
    model = make_model(spec.name, {**spec.params, **({"verbose": "false"} if quiet else {})})
    t0 = time.perf_counter()
    model.fit(train, validation=val)
    fit_s = time.perf_counter() - t0
    history = history_dataset(model, pl.concat([train, val]))
    truth = build_truth(history, test)  # test items unknown to training count as misses
    result = evaluate(model, history, truth, k=10)
    summary = dict(model.training_summary_)
    summary["history"] = [
        {k: round(v, 5) for k, v in h.items() if k in ("epoch", "loss", "val_recall_at_10")}
        for h in summary["history"]
    ]
    return {
        "model": spec.name,
        "params": spec.params,
        "test_users": int(result.metrics["n_users_evaluated"]),
        "ndcg@10": result.metrics["ndcg@10"],
        "hr@10": result.metrics["hr@10"],
        "fit_seconds": fit_s,
        "test_ranking_seconds": result.recommend_seconds,
        "summary": summary,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_avg": os.getloadavg(),
    }


def summarize(runs: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """Mean and sample standard deviation (0 for one run) of NDCG@10 and HR@10 over seeds."""
    out: dict[str, Any] = {"model": runs[0]["model"], "seeds": seeds}
    for metric in ("ndcg@10", "hr@10"):
        values = [float(r[metric]) for r in runs]
        out[f"{metric}_mean"] = statistics.fmean(values)
        out[f"{metric}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="registry name with overrides, e.g. esasrec:n_factors=128")
    ap.add_argument("--data", type=Path, default=None, help="S3-Rec file (default: beauty in the data home)")
    ap.add_argument(
        "--validation-users",
        default="2048",
        help="validate on N random users, the rest train on their second-to-last event; or 'all'",
    )
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, one run per seed and model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    users = None if args.validation_users == "all" else int(args.validation_users)
    data = load_loo(args.data or resolve("beauty")[0], users)
    seeds = [int(s) for s in args.seeds.split(",")]
    for spec in parse_models(",".join(args.models)):
        if "seed" in spec.params:
            ap.error(f"{spec.name}: give seeds with --seeds, not as a model parameter")
        runs = []
        for seed in seeds:
            runs.append(run(ModelRun(name=spec.name, params={**spec.params, "seed": seed}), data, args.quiet))
            print(json.dumps(runs[-1]), flush=True)
        summary = summarize(runs, seeds)
        print(json.dumps({**summary, "params": spec.params}), flush=True)
        print(
            f"{spec.name} {spec.params}: "
            f"NDCG@10 {summary['ndcg@10_mean']:.4f} ± {summary['ndcg@10_sd']:.4f}, "
            f"HR@10 {summary['hr@10_mean']:.4f} ± {summary['hr@10_sd']:.4f} over seeds {seeds}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
