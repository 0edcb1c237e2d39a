"""Fitting a model on all of a dataset for production (no test part kept)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import polars as pl

from vitrina.data.columns import ITEM, USER
from vitrina.data.splits import Split, leave_one_out
from vitrina.evaluation.api import score_on_split
from vitrina.models.base import Recommender


def holdout(
    interactions: pl.DataFrame, *, validation_users: int = 2048, seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(train, validation)``: the latest event of ``validation_users`` random users (seeded; of
    those with at least two events) held out, every other event, each other user's latest
    included, in train."""
    last = leave_one_out(interactions, validation=False)
    users = last.test.select(USER).unique().sort(USER)
    sample = users.sample(min(validation_users, users.height), seed=seed)
    validation = last.test.join(sample, on=USER, how="semi")
    train = pl.concat([last.train, last.test.join(sample, on=USER, how="anti")], how="vertical_relaxed")
    return train, validation


def fit_on_all(
    model: Recommender, interactions: pl.DataFrame, *, validation_users: int = 2048, seed: int = 0
) -> Recommender:
    """Fit on every event. Models that early-stop hold out the last event of ``validation_users``
    random users (seeded) as validation and keep their best epoch; everything else, including
    every other user's most recent event, is trained on. Models without early stopping see all."""
    if not model.uses_validation:
        return model.fit(interactions)
    train, validation = holdout(interactions, validation_users=validation_users, seed=seed)
    return model.fit(train, validation=validation)


def validation_lineage(
    model: Recommender,
    interactions: pl.DataFrame,
    *,
    validation_users: int = 2048,
    seed: int = 0,
    k: int = 10,
    score_baselines: bool = True,
) -> dict[str, Any]:
    """How well ``model`` (fitted by :func:`fit_on_all` with the same sample) ranked the latest
    event of the validation users, for the bundle's lineage: ``{"validation": {"metrics",
    "users", "events", "seed", "method"}}``, or ``{"validation": None, "validation_note": why}``.

    Early-stopping models report their best epoch's scores (NDCG@10, Recall@10). Any other model
    is fitted on every event, so its own score on the sample would be a score on training data: a
    copy with the same parameters is fitted without the held-out events and scored on them (every
    metric at ``k``; the fit time doubles) unless ``score_baselines`` is False."""
    train, validation = holdout(interactions, validation_users=validation_users, seed=seed)
    sample = {"users": validation[USER].n_unique(), "events": validation.height, "seed": seed}
    summary = getattr(model, "training_summary_", {})
    if model.uses_validation and summary.get("best_val_ndcg_at_10") is not None:
        refit = " (then refitted on every event)" if summary.get("refit") else ""
        return {
            "validation": {
                "metrics": {
                    "ndcg@10": summary["best_val_ndcg_at_10"],
                    "recall@10": summary["best_val_recall_at_10"],
                },
                **sample,
                "method": "early stopping on the latest event of these users: the best epoch's "
                f"scores{refit}",
            }
        }
    if validation.height == 0:
        return {"validation": None, "validation_note": "no user has two events to hold the latest out"}
    if not score_baselines:
        return {"validation": None, "validation_note": "skipped: vitrina train --no-validate"}
    probe = type(model)(**model.get_params()).fit(train)
    result, _ = score_on_split(probe, Split(train, train.clear(), validation), k=k)
    return {
        "validation": {
            "metrics": {  # an undefined metric (NaN) is null: config.json is strict JSON
                name: value if math.isfinite(value) else None
                for name, value in result.metrics.items()
                if name.endswith(f"@{k}")
            },
            **sample,
            "method": "a copy fitted without the latest event of these users, scored on it (full "
            "catalogue); the saved model is then fitted on every event",
        }
    }


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
