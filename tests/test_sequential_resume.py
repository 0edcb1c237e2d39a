"""Training beyond one process (issue 11, part 6): ``vitrina train`` killed with SIGKILL mid-training
and resumed ends as the uninterrupted run does; the same command under ``torchrun`` (2 gloo
processes) trains data-parallel to the same model."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from vitrina.errors import ConfigError
from vitrina.models.base import load_model
from vitrina.models.sequential import SequentialTransformer

REPO = Path(__file__).resolve().parents[1]
SPEC = "sasrec:n_factors=16,n_blocks=1,max_len=20,batch_size=64,dropout=0.0,patience=4,device=cpu,epochs=12"
EPOCHS = 12
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """800 users walking a ring of 100 items (next item = current + 1..3): learnable, so validation
    recall moves across epochs."""
    rng = np.random.default_rng(5)
    rows = []
    for user in range(800):
        item = int(rng.integers(100))
        for t in range(int(rng.integers(5, 25))):
            rows.append((user, item, t))
            item = (item + int(rng.integers(1, 4))) % 100
    path = tmp_path_factory.mktemp("log") / "events.parquet"
    pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row").write_parquet(path)
    return path


def _train_command(log: Path, output: Path, *extra: str) -> list[str]:
    return [
        "-m",
        "vitrina.cli",
        "train",
        "--dataset",
        str(log),
        "--model",
        SPEC,
        "--output",
        str(output),
        "--format",
        "parquet",
        *extra,
    ]


@pytest.fixture(scope="module")
def uninterrupted(log: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plain") / "model"
    done = subprocess.run(
        [sys.executable, *_train_command(log, out)], env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _checkpoint_epoch(path: Path) -> int:
    return int(torch.load(path, weights_only=True)["progress"]["epoch"])


def _assert_same_model(got: Path, expected: Path, atol: float, overlap_at_least: float) -> None:
    a, b = load_model(got), load_model(expected)
    assert isinstance(a, SequentialTransformer) and isinstance(b, SequentialTransformer)
    for name, value in b.network_.state_dict().items():
        np.testing.assert_allclose(
            a.network_.state_dict()[name].numpy(), value.numpy(), atol=atol, err_msg=name
        )
    users = b.users_.external_ids.to_list()
    overlap = a.recommend(users, 10).join(b.recommend(users, 10), on=["user_id", "item_id"]).height / (
        10 * len(users)
    )
    assert overlap >= overlap_at_least


def test_sigkill_mid_training_then_resume_ends_as_uninterrupted(
    log: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    checkpoint = out / "checkpoint.pt"
    proc = subprocess.Popen([sys.executable, *_train_command(log, out)], env=ENV, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not checkpoint.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    killed_at = _checkpoint_epoch(checkpoint)
    assert 1 <= killed_at < EPOCHS and not (out / "config.json").exists()

    # settings that shape training must match the checkpoint: refused with the reason
    with pytest.raises(ConfigError, match=r"written for other data or settings \(.*\blr\b"):
        SequentialTransformer(lr=0.01, checkpoint=str(checkpoint), resume=True, verbose=False).fit(
            pl.read_parquet(log).with_columns(weight=pl.lit(1.0))
        )

    done = subprocess.run(
        [sys.executable, *_train_command(log, out, "--resume")], env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not checkpoint.exists()  # removed once the model is saved
    _assert_same_model(out, uninterrupted, atol=1e-6, overlap_at_least=1.0)


def test_torchrun_two_gloo_processes_train_the_same_model(
    log: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    out = tmp_path / "model"
    command = [torchrun, "--standalone", "--nproc-per-node", "2", *_train_command(log, out)]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # data-parallel = the same global batches; only float summation order differs
    _assert_same_model(out, uninterrupted, atol=1e-3, overlap_at_least=0.98)
