"""Shared fixtures. Real datasets come from ``$VITRINA_DATA_HOME`` (default ``../shared/datasets``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
