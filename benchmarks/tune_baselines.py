"""How far tuning moves each baseline: default vs tuned parameters, test NDCG@10 / HR@10.

For each dataset, one leave-one-out split (2,048 validation users, seed 0); ``vitrina tune``'s
search (TPE, validation only) picks each baseline's parameters; then one benchmark run scores
the default and the tuned model on the test part, once. Trials are few (the machine is shared):
read the tuned numbers as what a short search finds, not as each model's ceiling.

    python benchmarks/tune_baselines.py --datasets ml-100k,lastfm --trials 12 --output results/tuned
    python benchmarks/tune_baselines.py --datasets beauty --trials 10 --trials-for ease=5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console

from vitrina.evaluation.benchmark import load_data, make_split, run_benchmark
from vitrina.evaluation.config import make_config
from vitrina.evaluation.tuning import tune_on_split
from vitrina.models.registry import make_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="ml-100k,lastfm,beauty")
    parser.add_argument("--models", default="itemknn,ease,als,bpr")
    parser.add_argument("--trials", type=int, default=12, help="trials per model (default 12)")
    parser.add_argument(
        "--trials-for",
        default="",
        help="per-model trial counts overriding --trials, e.g. ease=5,bpr=8 (slow fits get fewer)",
    )
    parser.add_argument("--output", type=Path, default=Path("results/tuned-baselines"))
    args = parser.parse_args()
    console = Console(stderr=True, log_path=False)
    trials_for = {m: int(n) for m, n in (kv.split("=") for kv in args.trials_for.split(",") if kv)}
    rows = []
    for dataset in args.datasets.split(","):
        config = make_config({"dataset": dataset, "split": "loo", "seed": 0})
        df, _, _ = load_data(config)
        split = make_split(config, df)
        instances = {}
        for name in args.models.split(","):
            start = time.perf_counter()
            study = tune_on_split(
                name,
                split,
                n_trials=trials_for.get(name, args.trials),
                seed=0,
                output=args.output / dataset / name,
            )
            console.log(f"{dataset} {name}: best validation {study.best_value:.4f} {study.best_params}")
            instances[f"{name} default"] = make_model(name)
            instances[f"{name} tuned"] = make_model(name, study.best_params)
            rows.append(
                {
                    "dataset": dataset,
                    "model": name,
                    "trials": len(study.trials),
                    "tune_seconds": round(time.perf_counter() - start, 1),
                    "best_params": study.best_params,
                    "best_val_ndcg@10": study.best_value,
                }
            )
        bench = make_config({"dataset": dataset, "split": "loo", "seed": 0, "output": args.output / dataset})
        results = run_benchmark(bench, console=console, models=instances)
        by_name = {r["model"]: r["metrics"] for r in results["runs"]}
        for row in rows:
            if row["dataset"] == dataset:
                for which in ("default", "tuned"):
                    m = by_name[f"{row['model']} {which}"]
                    row[f"{which}_ndcg@10"], row[f"{which}_hr@10"] = m["ndcg@10"], m["hr@10"]
        (args.output / "tuned.json").write_text(json.dumps(rows, indent=2, default=str))
    print(
        "| dataset | model | trials | NDCG@10 default | NDCG@10 tuned | HR@10 default | HR@10 tuned "
        "| tuned parameters |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["best_params"].items()
        )
        print(
            f"| {r['dataset']} | {r['model']} | {r['trials']} "
            f"| {r['default_ndcg@10']:.4f} | {r['tuned_ndcg@10']:.4f} "
            f"| {r['default_hr@10']:.4f} | {r['tuned_hr@10']:.4f} | {params} |"
        )


if __name__ == "__main__":
    main()
