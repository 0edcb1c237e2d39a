"""Data-parallel training (2 gloo processes) equals single-process training on the same global batch."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vitrina.models.sequential import SequentialTransformer

# batch-shared negatives (one matmul) and per-sequence / per-position negatives (sliced per rank)
# must all match
CONFIGS = [
    {"layers": "ligr", "loss": "sampled_softmax", "n_negatives": 8},
    {"layers": "ligr", "loss": "sampled_softmax", "n_negatives": 8, "negatives_per": "sequence"},
    {"layers": "sasrec", "loss": "bce", "n_negatives": 2, "negatives_per": "position"},
]
PARAMS = {
    "n_factors": 8,
    "n_blocks": 1,
    "max_len": 6,
    "batch_size": 16,
    "epochs": 1,
    "dropout": 0.0,
    "verbose": False,
    "device": "cpu",
}


def tiny() -> tuple[pl.DataFrame, pl.DataFrame]:
    """32 users (two global batches of 16), 12 items; the last event of each user is validation."""
    rng = np.random.default_rng(1)
    rows = [
        (u, int(i), t)
        for u in range(32)
        for t, i in enumerate(rng.integers(12, size=int(rng.integers(3, 7))))
    ]
    df = pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row").with_columns(
        weight=pl.lit(1.0)
    )
    last = pl.col("timestamp") == pl.col("timestamp").max().over("user_id")
    return df.filter(~last), df.filter(last)


def weights(model: SequentialTransformer) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.network_.state_dict().items()}


def _worker(
    rank: int, port: int, out: str, backend: str = "gloo", world: int = 2, device: str = "cpu"
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        train, val = tiny()
        for i, config in enumerate(CONFIGS):
            params = {**PARAMS, **config, "device": device}
            model = SequentialTransformer(**params).fit(train, validation=val)  # type: ignore[arg-type]
            if rank == 0:
                recall = model.training_summary_["best_val_recall_at_10"]
                np.savez(f"{out}{i}.npz", **weights(model), val_recall=recall)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_processes_equal_one(tmp_path: Path) -> None:
    out = str(tmp_path / "ddp")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=2, join=True)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train, val = tiny()
        for i, config in enumerate(CONFIGS):
            single = SequentialTransformer(**PARAMS, **config).fit(train, validation=val)  # type: ignore[arg-type]
            ddp = np.load(f"{out}{i}.npz")
            for name, value in weights(single).items():
                np.testing.assert_allclose(
                    ddp[name], value, rtol=1e-3, atol=2e-4, err_msg=f"{config}: {name}"
                )
            assert float(ddp["val_recall"]) == single.training_summary_["best_val_recall_at_10"]
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU here: the nccl / device='auto' path needs one"
)
def test_nccl_on_gpus_trains_like_one_cpu_process(tmp_path: Path) -> None:
    """device='auto' puts each rank on its GPU and nccl all-reduces; weights match one CPU process
    up to GPU float round-off (one rank per GPU, at most 2)."""
    world = min(2, torch.cuda.device_count())
    out = str(tmp_path / "nccl")
    mp.spawn(_worker, args=(_free_port(), out, "nccl", world, "auto"), nprocs=world, join=True)
    train, val = tiny()
    for i, config in enumerate(CONFIGS):
        single = SequentialTransformer(**PARAMS, **config).fit(train, validation=val)  # type: ignore[arg-type]
        gpu = np.load(f"{out}{i}.npz")
        for name, value in weights(single).items():
            np.testing.assert_allclose(gpu[name], value, rtol=1e-2, atol=2e-3, err_msg=f"{config}: {name}")
