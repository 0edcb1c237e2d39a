"""Filters applied before splitting: k-core and explicit-to-implicit conversion."""

from __future__ import annotations

import polars as pl

from vitrina.data.columns import ITEM, USER, WEIGHT
from vitrina.errors import ConfigError


def k_core(df: pl.DataFrame, *, min_user: int = 5, min_item: int = 5, max_rounds: int = 100) -> pl.DataFrame:
    """Iteratively drop users with < ``min_user`` and items with < ``min_item`` events until stable.

    Counts are events (rows), as in the 5-core preprocessing of the Amazon/Yelp benchmarks. Row
    order is preserved.
    """
    if min_user < 1 or min_item < 1:
        raise ConfigError(f"k_core: min_user and min_item must be >= 1, got {min_user}, {min_item}")
    for _ in range(max_rounds):
        before = df.height
        df = df.filter(pl.len().over(USER) >= min_user)
        df = df.filter(pl.len().over(ITEM) >= min_item)
        if df.height == before:
            return df
    raise ConfigError(f"k_core did not converge in {max_rounds} rounds; raise max_rounds")


def to_implicit(df: pl.DataFrame, *, threshold: float | None = None) -> pl.DataFrame:
    """Binarise feedback: keep rows with ``weight >= threshold`` (all rows if ``None``), weight 1.

    The original value is kept in a ``rating`` column so nothing is lost.
    """
    if threshold is not None:
        df = df.filter(pl.col(WEIGHT) >= threshold)
    keep = df.with_columns(pl.col(WEIGHT).alias("rating")) if "rating" not in df.columns else df
    return keep.with_columns(pl.lit(1.0).alias(WEIGHT))
