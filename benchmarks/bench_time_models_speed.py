"""Epoch time of ``hstu`` and ``fuxi-alpha`` against ``esasrec`` at the same n_factors, blocks and
max_len, on the Beauty leave-one-out train part (with absolute times, ``beauty-ts``).

Reports median *process CPU* seconds per epoch (less sensitive than wall time to a shared, busy
machine) and the wall seconds, one thread, no validation. Prints a markdown table and JSON.

    python benchmarks/bench_time_models_speed.py --epochs 2 --blocks 2
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import torch

from vitrina.data.datasets import load_dataset
from vitrina.data.splits import leave_one_out
from vitrina.models.registry import make_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--models", default="esasrec,hstu,fuxi-alpha")
    args = parser.parse_args()
    torch.set_num_threads(1)
    split = leave_one_out(load_dataset("beauty-ts"), validation=False)
    rows = {}
    for name in args.models.split(","):
        params = {"epochs": args.epochs, "n_blocks": args.blocks, "verbose": False}
        model = make_model(name, params).fit(split.train)
        s = model.training_summary_
        rows[name] = {"cpu": s["epoch_cpu_seconds_median"], "wall": s["epoch_seconds_median"]}
    base = rows.get("esasrec", {}).get("cpu")
    print(f"| model ({args.blocks} blocks) | CPU s / epoch | wall s / epoch | vs esasrec |")
    print("|---|---:|---:|---:|")
    for name, r in rows.items():
        ratio = f"{r['cpu'] / base:.2f}x" if base else ""
        print(f"| {name} | {r['cpu']:.1f} | {r['wall']:.1f} | {ratio} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
