"""Item metadata for business rules: a catalogue table read once, then aligned to a model's items.

Columns (only ``item_id`` is required):

* ``item_id`` — the ids the model was trained on (unique).
* ``available`` — bool; unavailable items are never recommended.
* ``category`` — one category name per item (``categories`` filters and slates use it).
* ``lat``, ``lon`` — coordinates in degrees (location filters and the distance penalty).
* ``value`` — non-negative worth of an engagement (expected-value ranking; default 1).
* ``segments`` — ``|``-separated user segments that may see the item; empty means everyone.

Items the model knows but the catalogue lacks are treated as unavailable: a catalogue is the
source of truth for what may be shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from vitrina.data.columns import ITEM
from vitrina.data.idmap import IdMap
from vitrina.errors import DataValidationError

_NUMERIC = ("lat", "lon", "value")
_RANGES = {"lat": (-90.0, 90.0), "lon": (-180.0, 180.0), "value": (0.0, float("inf"))}


@dataclass(frozen=True, eq=False)
class AlignedCatalog:
    """Catalogue columns as arrays indexed by the model's internal item index."""

    available: np.ndarray  # bool
    category: np.ndarray  # int32 code, -1 = none
    category_codes: dict[str, int]
    lat: np.ndarray  # float64, NaN = unknown
    lon: np.ndarray
    value: np.ndarray  # float32
    restricted: np.ndarray  # bool: item has a segment rule
    segments: dict[str, np.ndarray]  # segment -> bool mask of items restricted to it and allowed
    n_missing: int  # model items absent from the catalogue

    def category_mask(self, names: list[str]) -> np.ndarray:
        """Items whose category is one of ``names``, compared case-insensitively ("drama" matches
        "Drama"); unknown names match nothing."""
        wanted = {n.casefold() for n in names}
        codes = [code for name, code in self.category_codes.items() if name.casefold() in wanted]
        return np.isin(self.category, np.asarray(codes, dtype=np.int32))

    def segment_mask(self, segment: str | None) -> np.ndarray:
        """Items a user of ``segment`` may see: unrestricted ones plus those listing the segment."""
        allowed = ~self.restricted
        if segment is not None and segment in self.segments:
            allowed = allowed | self.segments[segment]
        return allowed


def _row(df: pl.DataFrame, row: int) -> str:
    return f"row {row + 1} (item_id {df[ITEM][row]!r})"


def _parse_numbers(df: pl.DataFrame, col: str, source: str) -> pl.Series:
    """A text column of numbers as Float64; the first cell that is no number is named."""
    x = df[col].str.strip_chars().cast(pl.Float64, strict=False)
    bad = x.is_null() & df[col].is_not_null() & (df[col].str.strip_chars() != "")
    if bad.any():
        row = int(bad.arg_true()[0])
        where = f"{source}, {_row(df, row)}, column '{col}'"
        raise DataValidationError(f"{where}: not a number: {df[col][row]!r}")
    return x


def _check_range(df: pl.DataFrame, col: str, low: float, high: float, source: str) -> None:
    """Non-null values of ``col`` must be finite and in ``[low, high]``; names the first bad row (1-based)."""
    x = df[col].cast(pl.Float64)
    bad = (x.is_nan() | x.is_infinite() | (x < low) | (x > high)).fill_null(False)
    if bad.any():
        row = int(bad.arg_true()[0])
        bound = f">= {low:g}" if high == float("inf") else f"in [{low:g}, {high:g}]"
        raise DataValidationError(
            f"{source}, {_row(df, row)}, column '{col}': must be a finite number {bound}, got {x[row]!r}"
        )


@dataclass(frozen=True, eq=False)
class Catalog:
    """A validated catalogue table (see the module docstring for the columns)."""

    table: pl.DataFrame

    @classmethod
    def read(cls, path: str | Path) -> Catalog:
        """Read a parquet or CSV catalogue; errors name the file and the column."""
        path = Path(path)
        if not path.is_file():
            raise DataValidationError(f"catalogue {path}: no such file")
        try:
            df = (
                pl.read_parquet(path)
                if path.suffix == ".parquet"
                else pl.read_csv(path, infer_schema_length=10_000)
            )
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise DataValidationError(
                f"catalogue {path}: unreadable as {path.suffix or 'CSV'} ({exc})"
            ) from exc
        return cls.from_frame(df, source=str(path))

    @classmethod
    def from_frame(cls, df: pl.DataFrame, *, source: str = "catalogue") -> Catalog:
        if ITEM not in df.columns:
            raise DataValidationError(f"{source}: missing column '{ITEM}'; columns are {df.columns}")
        if df[ITEM].null_count() or df[ITEM].n_unique() != df.height:
            raise DataValidationError(f"{source}, column '{ITEM}': ids must be unique and non-null")
        for col in _NUMERIC:
            if col in df.columns and df[col].dtype == pl.String:  # CSV: "nan", "inf" or a typo
                df = df.with_columns(_parse_numbers(df, col, source))
            if col in df.columns and not df[col].dtype.is_numeric():
                raise DataValidationError(f"{source}, column '{col}': expected numbers, got {df[col].dtype}")
        for col, (low, high) in _RANGES.items():
            if col in df.columns:
                _check_range(df, col, low, high, source)
        if "available" in df.columns and df["available"].dtype != pl.Boolean:
            raise DataValidationError(
                f"{source}, column 'available': expected true/false, got {df['available'].dtype}"
            )
        return cls(df)

    def align(self, items: IdMap) -> AlignedCatalog:
        """Arrays over ``items`` (a model's item map); ids the catalogue lacks are unavailable."""
        df = self.table.with_columns(pl.col(ITEM).cast(items.dtype, strict=False))
        n = len(items)
        idx = items.to_internal(df[ITEM], strict=False)
        keep = idx >= 0
        rows, df = idx[keep], df.filter(pl.Series(keep))

        def column(name: str, default: float, dtype: type) -> np.ndarray:
            out = np.full(n, default, dtype=dtype)
            if name in df.columns:
                out[rows] = df[name].cast(pl.Float64).fill_null(default).to_numpy()
            return out

        present = np.zeros(n, dtype=bool)
        present[rows] = True
        available = present.copy()
        if "available" in df.columns:
            available[rows] = df["available"].fill_null(False).to_numpy()
        category = np.full(n, -1, dtype=np.int32)
        codes: dict[str, int] = {}
        if "category" in df.columns:
            names = df["category"].cast(pl.String)
            codes = {c: i for i, c in enumerate(sorted(names.drop_nulls().unique().to_list()))}
            category[rows] = names.replace_strict(codes, default=-1, return_dtype=pl.Int32).to_numpy()
        restricted = np.zeros(n, dtype=bool)
        segments: dict[str, np.ndarray] = {}
        if "segments" in df.columns:
            for row, spec in zip(rows, df["segments"].cast(pl.String).to_list(), strict=True):
                names_ = [s.strip() for s in (spec or "").split("|") if s.strip()]
                restricted[row] = bool(names_)
                for s in names_:
                    segments.setdefault(s, np.zeros(n, dtype=bool))[row] = True
        return AlignedCatalog(
            available=available,
            category=category,
            category_codes=codes,
            lat=column("lat", np.nan, np.float64),
            lon=column("lon", np.nan, np.float64),
            value=column("value", 1.0, np.float32),
            restricted=restricted,
            segments=segments,
            n_missing=int(n - present.sum()),
        )
