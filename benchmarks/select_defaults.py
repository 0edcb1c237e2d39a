"""Choose a model's defaults by their average rank over several datasets, never on one (issue 14).

One factor at a time around a pinned baseline (``BASE``, the registry default when the grid ran):
every candidate changes one thing (a parameter, or the stopping design), runs leave-one-out on
every dataset under one common epoch cap and patience, and is ranked by test NDCG@10 on each
dataset (mean over that dataset's seeds; rank 1 = best, ties share the mean rank); the table
orders candidates by their average rank.

Stopping designs: ``sampled`` = vitrina's default protocol (early stopping on 2,048 random users'
second-to-last events, drawn with the run's seed; everybody else's train); ``refit`` = every
user's second-to-last event validates, then ``refit=true`` trains a fresh network for the best
epoch count on train + validation. Test events (each user's last) are the same for both.

Noise: ``se`` is the standard error of NDCG@10 over the dataset's test users (one run);
``paired se`` that of the per-user difference from the baseline on the same users and seed, the
one that says whether a difference is inside noise.

    python benchmarks/select_defaults.py run ml-100k:0,1 lastfm:0,1 beauty:0 yelp:0 video-games:0 \\
        --epochs 100 --patience 15 --results results/select
    python benchmarks/select_defaults.py table --results results/select

``run`` appends one JSON line per (dataset, candidate, seed) to ``RESULTS/runs.jsonl`` (and the
per-user NDCG@10 to ``RESULTS/<run>.npz``) and skips runs already there, so it resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

# before torch loads OpenMP: sleeping worker threads (see docs/sequential.md)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import polars as pl
import torch

from vitrina.data.splits import leave_one_out
from vitrina.evaluation.benchmark import load_data
from vitrina.evaluation.config import make_config
from vitrina.evaluation.evaluate import build_truth, evaluate, history_dataset
from vitrina.metrics import per_user_metrics
from vitrina.models.registry import make_model

SAMPLED_USERS = 2048
#: what every candidate starts from, on top of ``--model``'s registry entry: esasrec's registry
#: default when the grid ran (issue 14), pinned so that reruns reproduce docs/benchmarks.md
BASE: dict[str, Any] = {"n_negatives": 256, "negatives_per": "sequence"}
#: candidate -> (parameter overrides of BASE, stopping design); the first is the baseline
CANDIDATES: dict[str, tuple[dict[str, Any], str]] = {
    "base": ({}, "sampled"),
    "dropout=0.2": ({"dropout": 0.2}, "sampled"),
    "n_negatives=512": ({"n_negatives": 512}, "sampled"),
    # 2,048 shared by the batch (esasrec's registry default since this grid chose it)
    "batch-2048": ({"n_negatives": 2048, "negatives_per": "batch"}, "sampled"),
    "refit": ({"refit": True}, "refit"),
}
BASELINE = next(iter(CANDIDATES))


def run_one(
    model_name: str, dataset: str, candidate: str, seed: int, epochs: int, patience: int
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Fit and rank one candidate; returns its record, test users (external ids) and their NDCG@10."""
    overrides, design = CANDIDATES[candidate]
    df, _, _ = load_data(make_config({"dataset": dataset, "split": "loo"}))
    users = SAMPLED_USERS if design == "sampled" else None
    split = leave_one_out(df, validation_users=users, seed=seed)
    params = {**BASE, **overrides, "epochs": epochs, "patience": patience, "seed": seed, "verbose": False}
    model = make_model(model_name, params)
    t0 = time.perf_counter()
    model.fit(split.train, validation=split.validation)
    fit_s = time.perf_counter() - t0
    history = history_dataset(model, pl.concat([split.train, split.validation]))
    truth = build_truth(history, split.test)
    result = evaluate(model, history, truth, k=10)
    ndcg = per_user_metrics(result.topk, truth.matrix, k=10)["ndcg@10"]
    summary = model.training_summary_
    record = {
        "model": model_name,
        "dataset": dataset,
        "candidate": candidate,
        "seed": seed,
        "epochs": epochs,
        "patience": patience,
        "validation_users": split.validation.height,
        "test_users": len(ndcg),
        "ndcg@10": result.metrics["ndcg@10"],
        "hr@10": result.metrics["hr@10"],
        "ndcg_se": float(np.std(ndcg, ddof=1) / np.sqrt(len(ndcg))),
        "epochs_trained": summary["epochs_trained"],
        "best_epoch": summary["best_epoch"],
        "refit": summary.get("refit"),
        "epoch_seconds_median": summary["epoch_seconds_median"],
        "fit_seconds": round(fit_s, 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "threads": torch.get_num_threads(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    return record, history.users.to_external(truth.users).to_numpy(), ndcg


def _key(r: dict[str, Any]) -> tuple[str, str, int, int, int]:
    return (r["dataset"], r["candidate"], r["seed"], r["epochs"], r["patience"])


def load_runs(results: Path) -> list[dict[str, Any]]:
    path = results / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def _npz(results: Path, r: dict[str, Any]) -> Path:
    return results / f"{r['dataset']}-{r['candidate']}-s{r['seed']}-e{r['epochs']}p{r['patience']}.npz"


def _candidates(args: argparse.Namespace, with_baseline: bool) -> list[str]:
    """The ``--candidates`` subset (all by default), checked; ``with_baseline`` puts the baseline
    first (the table takes its paired standard errors against it)."""
    names = args.candidates.split(",") if args.candidates else list(CANDIDATES)
    unknown = [c for c in names if c not in CANDIDATES]
    if unknown:
        known = ", ".join(CANDIDATES)
        raise SystemExit(f"unknown candidate(s) {', '.join(unknown)}; expected some of {known}")
    return [BASELINE, *(c for c in names if c != BASELINE)] if with_baseline else names


def cmd_run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    args.results.mkdir(parents=True, exist_ok=True)
    done = {_key(r) for r in load_runs(args.results)}
    candidates = _candidates(args, with_baseline=False)
    for item in args.runs:
        dataset, _, seeds = item.partition(":")
        for seed in [int(s) for s in (seeds or "0").split(",")]:
            for candidate in candidates:
                key = (dataset, candidate, seed, args.epochs, args.patience)
                if key in done:
                    continue
                record, users, ndcg = run_one(
                    args.model, dataset, candidate, seed, args.epochs, args.patience
                )
                np.savez_compressed(_npz(args.results, record), users=users.astype(str), ndcg=ndcg)
                with (args.results / "runs.jsonl").open("a") as f:
                    f.write(json.dumps(record) + "\n")
                print(json.dumps(record), flush=True)


def _ranks(values: dict[str, float]) -> dict[str, float]:
    """Rank 1 = highest value; ties share their mean rank."""
    ordered = sorted(values, key=lambda c: -values[c])
    ranks: dict[str, float] = {}
    for c in ordered:
        tied = [i + 1 for i, d in enumerate(ordered) if values[d] == values[c]]
        ranks[c] = statistics.fmean(tied)
    return ranks


def _paired_se(results: Path, r: dict[str, Any], base: dict[str, Any]) -> float:
    """Standard error of the per-user NDCG@10 difference between two runs on the same test users."""
    a, b = np.load(_npz(results, r)), np.load(_npz(results, base))
    other = dict(zip(b["users"], b["ndcg"], strict=True))
    diff = np.array([v - other[u] for u, v in zip(a["users"], a["ndcg"], strict=True)])
    return float(np.std(diff, ddof=1) / np.sqrt(len(diff)))


def _cells(results: Path, rows: dict[str, list[dict[str, Any]]], candidate: str) -> list[str]:
    """Seeds, NDCG@10 (± sd over seeds), HR@10, epochs, se, paired se and fit minutes of one
    candidate's runs."""
    rs = rows[candidate]
    ndcg = [r["ndcg@10"] for r in rs]
    sd = f" ± {statistics.stdev(ndcg):.4f}" if len(rs) > 1 else ""
    base = {r["seed"]: r for r in rows[BASELINE]}
    paired = (
        ""
        if candidate == BASELINE
        else f"{statistics.fmean(_paired_se(results, r, base[r['seed']]) for r in rs):.4f}"
    )
    epochs = ", ".join(
        f"{r['epochs_trained']} ({r['best_epoch']})"
        + (f" + {r['refit']['epochs_trained']}" if r["refit"] else "")
        for r in rs
    )
    return [
        ",".join(str(r["seed"]) for r in rs),
        f"{statistics.fmean(ndcg):.4f}{sd}",
        f"{statistics.fmean(r['hr@10'] for r in rs):.4f}",
        epochs,
        f"{statistics.fmean(r['ndcg_se'] for r in rs):.4f}",
        paired,
        f"{statistics.fmean(r['fit_seconds'] for r in rs) / 60:.1f}",
    ]


def cmd_table(args: argparse.Namespace) -> None:
    runs = [
        r for r in load_runs(args.results) if (r["epochs"], r["patience"]) == (args.epochs, args.patience)
    ]
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        by.setdefault((r["dataset"], r["candidate"]), []).append(r)
    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    wanted = _candidates(args, with_baseline=True)
    # a dataset counts only once every candidate ran on it; a candidate only if it ran everywhere
    complete = [d for d in datasets if all((d, c) in by for c in wanted)]
    candidates = [c for c in wanted if all((d, c) in by for d in complete)]
    print(f"epochs {args.epochs}, patience {args.patience}; datasets ranked: {', '.join(complete)}")
    if set(datasets) - set(complete):
        print(f"not ranked (not every candidate ran): {', '.join(d for d in datasets if d not in complete)}")
    columns = (
        "dataset",
        "candidate",
        "seeds",
        "NDCG@10",
        "HR@10",
        "epochs (best)",
        "se",
        "paired se vs base",
    )
    print(
        "\n| "
        + " | ".join((*columns, "fit min", "rank"))
        + " |\n|---|---|---|---:|---:|---|---:|---:|---:|---:|"
    )
    total = dict.fromkeys(candidates, 0.0)
    for d in complete:
        # a seed counts only if every candidate ran it, so the means compare the same seeds
        seeds = set.intersection(*({r["seed"] for r in by[(d, c)]} for c in candidates))
        rows = {
            c: sorted((r for r in by[(d, c)] if r["seed"] in seeds), key=lambda r: r["seed"])
            for c in candidates
        }
        ranks = _ranks({c: statistics.fmean(r["ndcg@10"] for r in rows[c]) for c in candidates})
        for c in candidates:
            print(f"| {d} | {c} | " + " | ".join(_cells(args.results, rows, c)) + f" | {ranks[c]:g} |")
            total[c] += ranks[c]
    print(f"\n| candidate | average rank (NDCG@10) over {len(complete)} datasets |\n|---|---:|")
    for c in sorted(candidates, key=lambda c: total[c]):
        print(f"| {c} | {total[c] / max(len(complete), 1):.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("run", "table"):
        p = sub.add_parser(name)
        p.add_argument("--results", type=Path, required=True, help="folder of runs.jsonl and per-user files")
        p.add_argument("--epochs", type=int, default=100, help="common epoch cap of every run")
        p.add_argument("--patience", type=int, default=15, help="common early-stopping patience")
        if name == "run":
            p.add_argument("runs", nargs="+", help="DATASET[:SEED,SEED...], a registered name or a file")
            p.add_argument("--model", default="esasrec")
            p.add_argument("--threads", type=int, default=1)
        p.add_argument(
            "--candidates",
            default=None,
            help=f"comma-separated subset of {', '.join(CANDIDATES)} (tables add the baseline)",
        )
    args = ap.parse_args()
    (cmd_run if args.command == "run" else cmd_table)(args)


if __name__ == "__main__":
    main()
