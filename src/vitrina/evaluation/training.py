"""Fitting a model on all of a dataset for production (no test part kept)."""

from __future__ import annotations

import polars as pl

from vitrina.data.splits import leave_one_out
from vitrina.models.base import Recommender


def fit_on_all(model: Recommender, interactions: pl.DataFrame) -> Recommender:
    """Fit on every event. Models that early-stop hold out each user's last event as validation
    (leave-one-out without a test part) and keep their best epoch; others see everything."""
    if model.uses_validation:
        split = leave_one_out(interactions, validation=False)
        return model.fit(split.train, validation=split.test)
    return model.fit(interactions)
