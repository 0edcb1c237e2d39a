"""Epoch time of vitrina's eSASRec vs RecTools 0.19's equivalent SASRecModel, side by side in one run.

Both train on the same Beauty leave-one-out train part (validation on 2,048 users, as
``vitrina benchmark``) with the same configuration (LiGR block, 1 block, 1 head, 64 factors,
max_len 50, dropout 0.2, sampled softmax over 256 negatives, batch 128, lr 1e-3). vitrina runs
before and after RecTools so that both see similar machine load; RecTools runs in its own virtual
environment (``--rectools-python``) as a subprocess. Epoch times exclude validation (RecTools is
given none); vitrina's validation time is reported separately. vitrina is timed once per
``--negatives`` mode (RecTools draws per position). Prints a markdown table and the raw numbers
as JSON.

    python benchmarks/bench_sequential_speed.py --rectools-python /work/rectools-venv/bin/python

``--profile`` instead trains one vitrina epoch under ``torch.profiler`` and prints the operators by
self CPU time, with the threads and the SIMD level torch runs with (``ATEN_CPU_CAPABILITY=avx2`` or
``default`` in the environment forces a lower level than the host's, to check host sensitivity):

    ATEN_CPU_CAPABILITY=avx2 python benchmarks/bench_sequential_speed.py --profile
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Before torch loads OpenMP: idle worker threads spin briefly, then sleep (see docs/sequential.md,
# "Threads"): always sleeping made each small op wait for a wake-up, endless spinning starves a busy CPU.
os.environ.setdefault("GOMP_SPINCOUNT", "30000")

import torch

sys.path.insert(0, str(Path(__file__).parent))
from sequential_quality import load_loo

from vitrina.data.dataset import Dataset
from vitrina.data.datasets import resolve
from vitrina.models.registry import make_model

CONFIG = "n_factors=64,n_blocks=1,n_heads=1,max_len=50,dropout=0.2,n_negatives=256,batch_size=128,lr=0.001"

RECTOOLS_SCRIPT = """
import json, sys, time
import pandas as pd, torch
from pytorch_lightning import Callback, Trainer
from rectools.dataset import Dataset
from rectools.models import SASRecModel
from rectools.models.nn.transformers.ligr import LiGRLayers

path, epochs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
df = pd.read_csv(path)
df["datetime"] = pd.to_datetime(df["timestamp"], unit="s")
dataset = Dataset.construct(df[["user_id", "item_id", "weight", "datetime"]])
times, cpu = [], []

class Timer(Callback):
    def on_train_epoch_start(self, trainer, module):
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def on_train_epoch_end(self, trainer, module):
        times.append(time.perf_counter() - self.t0)
        cpu.append(time.process_time() - self.c0)

def trainer():
    return Trainer(max_epochs=epochs, min_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                   enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                   callbacks=[Timer()])

model = SASRecModel(
    transformer_layers_type=LiGRLayers, loss="sampled_softmax", n_negatives=256, use_key_padding_mask=True,
    n_factors=64, n_blocks=1, n_heads=1, session_max_len=50, dropout_rate=0.2, batch_size=128, lr=1e-3,
    epochs=epochs, get_trainer_func=trainer,
)
model.fit(dataset)
print(json.dumps({"epoch_seconds": times, "epoch_cpu_seconds": cpu}))
"""


def _omp_env() -> str:
    return ", ".join(f"{k}={os.environ.get(k, 'not set')}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"))


def vitrina_epochs(train: Dataset, val: Dataset, epochs: int, negatives_per: str) -> dict[str, list[float]]:
    params = dict(kv.split("=") for kv in CONFIG.split(","))
    params.update(negatives_per=negatives_per, epochs=str(epochs), patience=str(epochs), verbose="false")
    model = make_model("esasrec", params)
    model.fit(train, validation=val)
    hist = model.training_summary_["history"]
    return {
        "train": [h["train_seconds"] for h in hist],
        "cpu": [h["train_cpu_seconds"] for h in hist],
        "validation": [model.training_summary_["validation_seconds_median"]],
    }


def profile_epoch(train: Dataset, val: Dataset, negatives_per: str) -> None:
    """One epoch under torch.profiler: the operators by self CPU time, and the thread settings."""
    from torch.profiler import ProfilerActivity, profile

    print(
        f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()} "
        f"(ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', 'not set')}), "
        f"intra-op threads {torch.get_num_threads()}, inter-op threads {torch.get_num_interop_threads()}, "
        f"{_omp_env()}, load average {os.getloadavg()}"
    )
    wall, cpu = time.perf_counter(), time.process_time()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        times = vitrina_epochs(train, val, 1, negatives_per)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"epoch {times['train'][0]:.2f} s wall, {times['cpu'][0]:.2f} CPU s (profiled run: {wall:.1f} s wall,"
    )
    print(f"{cpu:.1f} CPU s, {cpu / wall:.2f} cores busy on average, validation included)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rectools-python", type=Path, default=Path("/work/rectools-venv/bin/python"))
    ap.add_argument("--rectools-epochs", type=int, default=2)
    ap.add_argument("--vitrina-epochs", type=int, default=3, help="per run; each mode runs twice")
    ap.add_argument("--negatives", default="sequence,batch,position", help="vitrina's negatives_per modes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=None, help="S3-Rec file (default: beauty in the data home)")
    ap.add_argument("--profile", action="store_true", help="profile one vitrina epoch; no RecTools run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train, val, _ = load_loo(args.data or resolve("beauty")[0], 2048)  # as `vitrina benchmark`
    train_ds = Dataset.from_interactions(train)
    if args.profile:
        profile_epoch(train_ds, val, args.negatives.split(",")[0])
        return
    modes = args.negatives.split(",")
    runs: dict[str, dict[str, list[float]]] = {m: {"train": [], "cpu": [], "validation": []} for m in modes}

    def time_vitrina() -> None:
        for mode in modes:
            for key, values in vitrina_epochs(train_ds, val, args.vitrina_epochs, mode).items():
                runs[mode][key] += values

    load = [os.getloadavg()]
    time_vitrina()
    load.append(os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "train.csv"
        train.write_csv(csv)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                str(args.rectools_python),
                "-c",
                RECTOOLS_SCRIPT,
                str(csv),
                str(args.rectools_epochs),
                str(args.threads),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        rectools_wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"RecTools run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    rectools_out = json.loads(proc.stdout.strip().splitlines()[-1])
    rectools, rectools_cpu = rectools_out["epoch_seconds"], rectools_out["epoch_cpu_seconds"]
    load.append(os.getloadavg())
    time_vitrina()
    load.append(os.getloadavg())
    rt_wall, rt_cpu = statistics.median(rectools), statistics.median(rectools_cpu)
    result = {
        "config": CONFIG,
        "threads": args.threads,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "openmp": _omp_env(),
        "rectools_epoch_seconds": rectools,
        "rectools_epoch_cpu_seconds": rectools_cpu,
        "rectools_process_wall_seconds": rectools_wall,
        "vitrina": {
            mode: {
                "epoch_seconds": r["train"],
                "epoch_cpu_seconds": r["cpu"],
                "validation_seconds_median": statistics.median(r["validation"]),
                "speedup_median": rt_wall / statistics.median(r["train"]),
                "speedup_cpu_median": rt_cpu / statistics.median(r["cpu"]),
            }
            for mode, r in runs.items()
        },
        "load_average_1_5_15": load,
        "peak_rss_mb_vitrina": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_mb_rectools": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    print("| run | epoch s (median) | CPU s (median) | speed-up (wall) | speed-up (CPU) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| RecTools 0.19 (per position) | {rt_wall:.2f} | {rt_cpu:.2f} | 1 | 1 |")
    for mode, v in result["vitrina"].items():
        print(
            f"| vitrina, negatives per {mode} | {statistics.median(v['epoch_seconds']):.2f} | "
            f"{statistics.median(v['epoch_cpu_seconds']):.2f} | {v['speedup_median']:.1f}x | "
            f"{v['speedup_cpu_median']:.1f}x |"
        )
    print(f"\nload average (1/5/15 min) before, between, after: {load}")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
