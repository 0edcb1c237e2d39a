"""Stable, invertible mapping between external ids and dense internal indices 0..n-1."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import polars as pl

from vitrina.errors import DataValidationError


class IdMap:
    """External ids (ints or strings) <-> dense ``int64`` indices.

    Indices follow the order in which ids are given (first appearance), so building the
    map twice from the same table gives the same indices.
    """

    def __init__(self, external_ids: pl.Series) -> None:
        if external_ids.null_count():
            raise DataValidationError("IdMap: ids must not be null")
        if external_ids.n_unique() != len(external_ids):
            raise DataValidationError("IdMap: ids must be unique; use IdMap.from_values to deduplicate")
        self._ids = external_ids.alias("external_id")
        self._lookup = pl.DataFrame(
            {"external_id": self._ids, "index": pl.arange(0, len(self._ids), eager=True, dtype=pl.Int64)}
        )

    @classmethod
    def from_values(cls, values: pl.Series | Iterable[object]) -> IdMap:
        """Unique values in order of first appearance."""
        series = values if isinstance(values, pl.Series) else pl.Series(list(values))
        return cls(series.unique(maintain_order=True))

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def external_ids(self) -> pl.Series:
        return self._ids

    @property
    def dtype(self) -> pl.DataType:
        return self._ids.dtype

    def to_internal(self, ids: pl.Series | Iterable[object], *, strict: bool = True) -> np.ndarray:
        """Indices of ``ids``; unknown ids raise (``strict``) or map to -1."""
        series = (
            ids if isinstance(ids, pl.Series) else pl.Series(list(ids), dtype=self._ids.dtype, strict=False)
        )
        if series.dtype != self._ids.dtype:
            series = series.cast(self._ids.dtype, strict=False)
        frame = pl.DataFrame({"external_id": series})
        joined = frame.join(self._lookup, on="external_id", how="left", maintain_order="left")
        index = joined["index"]
        if strict and index.null_count():
            missing = frame.filter(index.is_null())["external_id"].head(5).to_list()
            raise DataValidationError(
                f"{index.null_count()} id(s) not in the mapping, e.g. {missing}; "
                "pass strict=False to map unknown ids to -1"
            )
        return index.fill_null(-1).to_numpy().astype(np.int64, copy=False)

    def to_external(self, index: np.ndarray) -> pl.Series:
        """External ids of dense indices (all must be in range)."""
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise DataValidationError(
                f"index out of range [0, {len(self)}): min {index.min()}, max {index.max()}"
            )
        return self._ids.gather(index)

    def save(self, path: Path) -> None:
        pl.DataFrame({"external_id": self._ids}).write_parquet(path)

    @classmethod
    def load(cls, path: Path) -> IdMap:
        return cls(pl.read_parquet(path)["external_id"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self._ids.equals(other._ids)

    def __repr__(self) -> str:
        return f"IdMap(n={len(self)}, dtype={self.dtype})"
