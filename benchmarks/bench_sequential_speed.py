"""Epoch time of vitrina's eSASRec vs RecTools 0.19's equivalent SASRecModel, side by side in one run.

Both train on the same Beauty leave-one-out train part with the same configuration (LiGR block,
1 block, 1 head, 64 factors, max_len 50, dropout 0.2, sampled softmax over 256 negatives,
batch 128, lr 1e-3). vitrina runs before and after RecTools so that both see similar machine
load; RecTools runs in its own virtual environment (``--rectools-python``) as a subprocess.
Epoch times exclude validation (RecTools is given none); vitrina's validation time is reported
separately. Prints one JSON object.

    python benchmarks/bench_sequential_speed.py --rectools-python /work/rectools-venv/bin/python
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

# Before torch loads OpenMP: sleeping (not spinning) worker threads; on a shared, busy CPU spinning
# threads made a 2-thread epoch up to ~50x slower in our measurements (see docs/sequential.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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


def vitrina_epochs(train: Dataset, val: Dataset, epochs: int) -> dict[str, object]:
    params = dict(kv.split("=") for kv in CONFIG.split(","))
    model = make_model(
        "esasrec", {**params, "epochs": str(epochs), "patience": str(epochs), "verbose": "false"}
    )
    model.fit(train, validation=val)
    hist = model.training_summary_["history"]
    return {
        "train": [h["train_seconds"] for h in hist],
        "cpu": [h["train_cpu_seconds"] for h in hist],
        "validation": model.training_summary_["validation_seconds_median"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rectools-python", type=Path, default=Path("/work/rectools-venv/bin/python"))
    ap.add_argument("--rectools-epochs", type=int, default=2)
    ap.add_argument("--vitrina-epochs", type=int, default=5, help="per run; vitrina runs twice")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=None, help="S3-Rec file (default: beauty in the data home)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train, val, _ = load_loo(args.data or resolve("beauty")[0])
    train_ds = Dataset.from_interactions(train)
    load = [os.getloadavg()]
    before = vitrina_epochs(train_ds, val, args.vitrina_epochs)
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
    after = vitrina_epochs(train_ds, val, args.vitrina_epochs)
    load.append(os.getloadavg())
    ours = before["train"] + after["train"]
    ours_cpu = before["cpu"] + after["cpu"]
    result = {
        "config": CONFIG,
        "threads": args.threads,
        "vitrina_epoch_seconds": ours,
        "vitrina_epoch_seconds_median": statistics.median(ours),
        "vitrina_validation_seconds_median": statistics.median([before["validation"], after["validation"]]),
        "rectools_epoch_seconds": rectools,
        "rectools_epoch_seconds_median": statistics.median(rectools),
        "rectools_process_wall_seconds": rectools_wall,
        "speedup_median": statistics.median(rectools) / statistics.median(ours),
        "vitrina_epoch_cpu_seconds": ours_cpu,
        "rectools_epoch_cpu_seconds": rectools_cpu,
        "speedup_cpu_median": statistics.median(rectools_cpu) / statistics.median(ours_cpu),
        "load_average_1_5_15": load,
        "peak_rss_mb_vitrina": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_mb_rectools": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
