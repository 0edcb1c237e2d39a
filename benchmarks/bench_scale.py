"""Scaling curves: wall time and peak RSS per stage (load, split, fit and evaluation of each model)
on synthetic logs of growing size, as a markdown table and a log-log plot.

    python benchmarks/bench_scale.py --sizes 0.2M,2M,20M --models popular,itemknn,als,esasrec:epochs=1

Each size runs in its own process (``vitrina datasets synth`` parameters: 0.2M events / 10k users /
10k items, 2M / 100k / 50k, 20M / 1M / 200k; the log is generated into ``--data`` if missing, and
generation is not a stage). Peak RSS per stage is the process's high-water mark reset before the
stage (``/proc/self/clear_refs``), so it includes what earlier stages still hold; CPU seconds
(process time over all threads) are reported beside wall seconds, as they depend less on what
else runs on a shared machine. Evaluation ranks
the full catalogue for ``--eval-users`` random test users (all of them if 0), the protocol of
``vitrina benchmark --eval-users``; ``pairs/s`` is scored (user, item) pairs per wall second.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SIZES = {
    "0.2M": (200_000, 10_000, 10_000),
    "2M": (2_000_000, 100_000, 50_000),
    "20M": (20_000_000, 1_000_000, 200_000),
}


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


@contextmanager
def _stage(rows: list[dict[str, Any]], size: str, name: str, **extra: Any) -> Iterator[dict[str, Any]]:
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
    start, cpu = time.perf_counter(), time.process_time()
    row: dict[str, Any] = {"size": size, "stage": name, **extra}
    yield row
    row.update(
        seconds=round(time.perf_counter() - start, 2),
        cpu_seconds=round(time.process_time() - cpu, 2),
        peak_mb=round(_peak_mb()),
    )
    rows.append(row)
    print(json.dumps(row), flush=True)


def run_one(size: str, models: str, data: Path, eval_users: int, seed: int) -> None:
    """One size in this process: prints one JSON line per stage."""
    from vitrina.data.synth import SynthConfig, write_synth
    from vitrina.evaluation.api import fit_on_split, history_of, popular_expectation, score_on_split
    from vitrina.evaluation.benchmark import load_data, make_split, plan_models, sample_test_users
    from vitrina.evaluation.config import make_config, parse_models

    events, users, items = SIZES[size]
    path = data / f"synth-{size}.parquet"
    if not path.exists():
        write_synth(SynthConfig(events=events, users=users, items=items, seed=seed), path)
    config = make_config(
        {"dataset": str(path), "models": [m.model_dump() for m in parse_models(models)], "seed": seed}
    )
    rows: list[dict[str, Any]] = []
    with _stage(rows, size, "load"):
        df, _, _ = load_data(config)
    with _stage(rows, size, "split"):
        split = make_split(config, df)
    del df
    population = None
    if eval_users:
        split, population = sample_test_users(split, split.test, eval_users, seed)
    expected = popular_expectation(history_of(split), split.test, config.k)
    planned_models = plan_models(config)
    while planned_models:
        planned = planned_models.pop(0)  # dropped after its stages: memory is freed for the next model
        with _stage(rows, size, f"fit {planned.name}"):
            fit_on_split(planned.model, split)
        with _stage(rows, size, f"evaluate {planned.name}") as row:
            result, _ = score_on_split(
                planned.model, split, k=config.k, expected=expected, population=population
            )
            n = result.metrics["n_users_evaluated"]
            row.update(
                ndcg=round(result.metrics[f"ndcg@{config.k}"], 4),
                pairs_per_s=round(n * len(planned.model.items_) / max(result.recommend_seconds, 1e-9)),
            )
        del planned


def markdown(rows: list[dict[str, Any]]) -> str:
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    cell = {(r["size"], r["stage"]): r for r in rows}
    head = "| stage | " + " | ".join(f"{s} wall s | {s} CPU s | {s} peak GB" for s in sizes) + " |"
    lines = [head, "|---|" + "---:|" * (3 * len(sizes))]
    for stage in stages:
        cells = []
        for s in sizes:
            r = cell.get((s, stage))
            cells += (
                [f"{r['seconds']:.1f}", f"{r['cpu_seconds']:.1f}", f"{r['peak_mb'] / 1024:.2f}"]
                if r
                else ["–"] * 3
            )
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    for stage in dict.fromkeys(r["stage"] for r in rows):
        pts = [(SIZES[r["size"]][0], r) for r in rows if r["stage"] == stage]
        xs = [p[0] for p in pts]
        ax_t.plot(xs, [max(p[1]["cpu_seconds"], 0.01) for p in pts], marker="o", label=stage)
        ax_m.plot(xs, [p[1]["peak_mb"] / 1024 for p in pts], marker="o", label=stage)
    for ax, label in ((ax_t, "CPU seconds (all threads)"), (ax_m, "peak RSS, GB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("events")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7)
    fig.suptitle("vitrina on synthetic logs (2 shared CPU cores)")
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.2M,2M,20M")
    parser.add_argument("--models", default="popular,itemknn,als,esasrec:epochs=1")
    parser.add_argument("--data", type=Path, default=Path("scale-data"), help="folder for the synthetic logs")
    parser.add_argument("--eval-users", type=int, default=10_000, help="0: every test user")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output", type=Path, default=Path("scale-results"), help="rows.jsonl, table.md, plot"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.one, args.models, args.data, args.eval_users, args.seed)
        return
    args.data.mkdir(parents=True, exist_ok=True)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "rows.jsonl").write_text("")
    rows: list[dict[str, Any]] = []
    for size in args.sizes.split(","):
        if size not in SIZES:
            sys.exit(f"--sizes: unknown size {size!r}; choose from {', '.join(SIZES)}")
        cmd = [sys.executable, __file__, "--one", size, "--models", args.models, "--data", str(args.data)]
        cmd += ["--eval-users", str(args.eval_users), "--seed", str(args.seed)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=os.environ)
        assert proc.stdout is not None
        for line in proc.stdout:  # stage by stage, so an interrupted run keeps what it measured
            if line.startswith("{"):
                rows.append(json.loads(line))
                print(line, end="", file=sys.stderr)
                with (args.output / "rows.jsonl").open("a") as f:
                    f.write(line)
        if proc.wait() != 0:
            print(f"{size}: stopped with exit code {proc.returncode}", file=sys.stderr)
    table = markdown(rows)
    (args.output / "table.md").write_text(table + "\n")
    plot(rows, args.output / "scaling.png")
    print(table)


if __name__ == "__main__":
    main()
