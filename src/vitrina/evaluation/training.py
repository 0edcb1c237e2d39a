"""Fitting a model on all of a dataset for production (no test part kept)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import polars as pl

from vitrina.data.columns import ITEM, USER
from vitrina.data.splits import leave_one_out
from vitrina.models.base import Recommender


def fit_on_all(
    model: Recommender, interactions: pl.DataFrame, *, validation_users: int = 2048, seed: int = 0
) -> Recommender:
    """Fit on every event. Models that early-stop hold out the last event of ``validation_users``
    random users (seeded) as validation and keep their best epoch; everything else, including
    every other user's most recent event, is trained on. Models without early stopping see all."""
    if not model.uses_validation:
        return model.fit(interactions)
    last = leave_one_out(interactions, validation=False)
    users = last.test.select(USER).unique().sort(USER)
    sample = users.sample(min(validation_users, users.height), seed=seed)
    validation = last.test.join(sample, on=USER, how="semi")
    train = pl.concat([last.train, last.test.join(sample, on=USER, how="anti")], how="vertical_relaxed")
    return model.fit(train, validation=validation)


def data_lineage(source: str, path: Path, interactions: pl.DataFrame) -> dict[str, Any]:
    """What a saved model was trained on: the dataset as named, the file's sha256 and size, and
    the events, users and items after filtering."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {
        "data": {
            "source": source,
            "file": str(path),
            "sha256": digest.hexdigest(),
            "bytes": path.stat().st_size,
            "events": interactions.height,
            "users": interactions[USER].n_unique(),
            "items": interactions[ITEM].n_unique(),
        }
    }
