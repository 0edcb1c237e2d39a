"""Shared fixtures. Real datasets come from ``$VITRINA_DATA_HOME`` (default ``../shared/datasets``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("VITRINA_DATA_HOME", str(REPO.parent / "shared" / "datasets"))
DATA_HOME = Path(os.environ["VITRINA_DATA_HOME"])


@pytest.fixture(scope="session")
def data_home() -> Path:
    if not (DATA_HOME / "ml-100k" / "u.data").is_file():
        pytest.fail(
            f"datasets not found under {DATA_HOME}; set VITRINA_DATA_HOME to the shared datasets folder"
        )
    return DATA_HOME


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny tensors: one thread avoids OpenMP hand-off costs that dominate on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ml100k_head(data_home: Path) -> pl.DataFrame:
    """The first 20,000 ml-100k ratings as implicit events (weight 1): a small real log for services."""
    from vitrina.data.loaders import load_movielens

    return load_movielens(data_home / "ml-100k" / "u.data").head(20_000).with_columns(weight=pl.lit(1.0))
