"""Every baseline (or any models) on every shipped dataset, one command, one table.

    python benchmarks/baselines.py [--datasets ml-100k,beauty] [--output results/baselines]
    python benchmarks/baselines.py --datasets ml-100k,lastfm --models "esasrec:epochs=60,patience=10,sasrec"

Leave-one-out on ml-100k, Beauty, Yelp, LastFM and Video Games; a global temporal split at
2001-01-01 on the ml-1m partial ratings (about 13% of events after it, 686 test users). Prints a markdown
table (what docs/benchmarks.md records) and writes each run's results.json under --output.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from pathlib import Path

from rich.console import Console

from vitrina.evaluation.benchmark import run_benchmark
from vitrina.evaluation.config import make_config, parse_models

BASELINES = "popular,itemknn,ease,als,bpr"
RUNS = {
    "ml-100k": {"split": "loo"},
    "beauty": {"split": "loo"},
    "yelp": {"split": "loo"},
    "lastfm": {"split": "loo"},
    "video-games": {"split": "loo"},
    "ml-1m": {"split": "temporal", "cutoff": "2001-01-01"},
}
COLUMNS = ("ndcg@10", "hr@10", "mrr@10", "coverage@10", "novelty@10", "serendipity@10")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default=",".join(RUNS))
    parser.add_argument(
        "--models", default=BASELINES, help="model specs, as for `vitrina benchmark --models`"
    )
    parser.add_argument("--output", type=Path, default=Path("results/baselines"))
    parser.add_argument(
        "--validation-users", default=2048, help="leave-one-out: validate on N random users, or 'all'"
    )
    args = parser.parse_args()
    console = Console(stderr=True, width=160)
    models = [run.model_dump() for run in parse_models(args.models)]
    rows = []
    for name in args.datasets.split(","):
        config = make_config(
            {
                "dataset": name,
                **RUNS[name],
                "validation_users": args.validation_users,
                "models": models,
                "output": args.output / name,
            }
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the ml-1m partial copy warning is stated in the table
            start = time.perf_counter()
            results = run_benchmark(config, console)
        console.log(f"{name}: {time.perf_counter() - start:.0f} s")
        for run in results["runs"]:
            metrics = [f"{run['metrics'].get(c, float('nan')):.4f}" for c in COLUMNS]
            split = f"temporal {config.cutoff}" if config.split == "temporal" else "loo"
            epochs = f"{run['epochs_trained']} ({run['best_epoch']})" if "best_epoch" in run else "-"
            rows.append([name, split, run["model"], *metrics, f"{run['fit_seconds']:.1f}", epochs])
    print(f"\nMachine: {platform.machine()}, {Path('/proc/cpuinfo').read_text().count('processor')} cores\n")
    print("| dataset | split | model | " + " | ".join(COLUMNS) + " | fit s | epochs (best) |")
    print("|---|---|---|" + "---:|" * (len(COLUMNS) + 2))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
