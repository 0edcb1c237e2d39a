"""Input tables of ``vitrina ab did|synth|ope``: CSV, Parquet or JSON lines, checked column by column.

Every refusal names the file, the 1-based data row (the header is not counted) and the field, so the
command line can print it as one line.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from vitrina.errors import DataValidationError

__all__ = ["numeric", "read_frame", "require", "text"]

_FORMATS = {".csv": "CSV", ".parquet": "Parquet", ".jsonl": "JSON lines", ".ndjson": "JSON lines"}


def read_frame(path: str | Path) -> pl.DataFrame:
    """Read a .csv, .parquet, .jsonl or .ndjson file without interpreting its columns."""
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"{path} does not exist or is not a file")
    kind = _FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataValidationError(
            f"{path}: unknown format '{path.suffix}'; expected one of {', '.join(_FORMATS)}"
        )
    try:
        if kind == "CSV":
            return pl.read_csv(path, infer_schema_length=None)
        if kind == "Parquet":
            return pl.read_parquet(path)
        return pl.read_ndjson(path, infer_schema_length=None)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataValidationError(f"{path}: not readable as {kind}: {detail}") from exc


def require(df: pl.DataFrame, columns: list[str], source: str, schema: str) -> None:
    """Refuse a table without ``columns``; ``schema`` is the one-line description shown with it."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataValidationError(f"{source}: missing column(s) {missing}; found {df.columns}. {schema}")
    if df.height == 0:
        raise DataValidationError(f"{source}: no rows")


def _first_bad(mask: pl.Series) -> int:
    return int(mask.arg_true()[0]) + 1


def numeric(
    df: pl.DataFrame,
    name: str,
    source: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    binary: bool = False,
) -> pl.Series:
    """Column ``name`` as finite floats, optionally within [low, high] ((low, high] with ``low_open``)
    or 0/1 (``binary``); the first offending row is named."""
    col = df[name]
    values = col.cast(pl.Float64, strict=False)
    if col.dtype == pl.String:  # " 1.5" and "1e3" are numbers; "abc" is not
        values = col.str.strip_chars().cast(pl.Float64, strict=False)
    bad = values.is_null()
    if bad.any():
        row = _first_bad(bad)
        got = col[row - 1]
        raise DataValidationError(f"{source}, row {row}, field '{name}': expected a number, got {got!r}")
    bad = values.is_nan() | values.is_infinite()
    if bad.any():
        row = _first_bad(bad)
        raise DataValidationError(
            f"{source}, row {row}, field '{name}': expected a finite number, got {values[row - 1]}"
        )
    if binary:
        bad = ~values.is_in([0.0, 1.0])
        if bad.any():
            row = _first_bad(bad)
            raise DataValidationError(
                f"{source}, row {row}, field '{name}': expected 0 or 1, got {values[row - 1]}"
            )
    if low is not None:
        bad = values <= low if low_open else values < low
        if high is not None:
            bad = bad | (values > high)
        if bad.any():
            row = _first_bad(bad)
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}]" if high is not None else f">= {low:g}"
            raise DataValidationError(
                f"{source}, row {row}, field '{name}': expected a value in {interval}, got {values[row - 1]}"
            )
    return values


def text(df: pl.DataFrame, name: str, source: str) -> pl.Series:
    """Column ``name`` as non-empty strings (numbers are read as their text)."""
    values = df[name].cast(pl.String)
    bad = values.is_null() | (values.str.strip_chars() == "")
    if bad.any():
        raise DataValidationError(
            f"{source}, row {_first_bad(bad)}, field '{name}': expected a value, got nothing"
        )
    return values
