"""Validation of the interaction table: ``user_id``, ``item_id``, ``timestamp``, ``weight`` (+ extras).

Errors name the source, the row and the field. Rows are numbered as in the source file when the
loader passes ``first_line`` (the line number of the first data row), else from 1; ``unit`` says
whether they are text lines (CSV, TSV) or table rows (Parquet, which has no lines).

Duplicate (user, item, timestamp) rows follow ``duplicates``:

* ``"keep"`` (default): every row stays; matrix views sum their weights, sequences repeat the item.
* ``"sum"``: collapse into one row (first row's extra columns), weights summed.
* ``"first"``: keep the first row in file order, drop the rest.
* ``"raise"``: refuse the table, naming the first duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl

from vitrina.data.columns import ITEM, REQUIRED, TIMESTAMP, USER, WEIGHT
from vitrina.errors import DataValidationError

DuplicatePolicy = Literal["keep", "sum", "first", "raise"]
#: loaders may pass exact source line numbers in this column; it is dropped on output
LINE_COLUMN = "__vitrina_line"
_ROW = LINE_COLUMN


@dataclass(frozen=True)
class _Source:
    """Where rows come from: the name in messages and what a row number counts ("line" or "row")."""

    name: str
    unit: Literal["line", "row"]

    def __str__(self) -> str:
        return self.name


def _fail(source: _Source, row: int | None, field: str, message: str) -> DataValidationError:
    where = f"{source}, {source.unit} {row}" if row is not None else str(source)
    return DataValidationError(f"{where}, field '{field}': {message}")


def _first_bad_row(df: pl.DataFrame, mask: pl.Series) -> int:
    return int(df.filter(mask)[_ROW][0])


_INT64_MAX = 2**63 - 1
#: floats hold every integer exactly up to 2^53; larger float ids would silently merge
_FLOAT_ID_MAX = 2**53


def _to_timestamp(df: pl.DataFrame, source: _Source) -> pl.DataFrame:
    col = df[TIMESTAMP]
    dtype = col.dtype
    if dtype.is_integer():
        too_big = col > _INT64_MAX if dtype == pl.UInt64 else pl.Series([False] * df.height, dtype=pl.Boolean)
        if too_big.any():
            raise _fail(
                source, _first_bad_row(df, too_big), TIMESTAMP, f"{col.filter(too_big)[0]} is out of range"
            )
        return df.with_columns(pl.col(TIMESTAMP).cast(pl.Int64))
    if dtype.is_float():
        bad = col.is_nan() | col.is_infinite()
        if bad.any():
            raise _fail(
                source,
                _first_bad_row(df, bad),
                TIMESTAMP,
                f"expected a finite number, got {col.filter(bad)[0]}",
            )
        return df
    if dtype == pl.Datetime or dtype == pl.Date:
        return df.with_columns(pl.col(TIMESTAMP).cast(pl.Datetime("ms")).dt.epoch("s").cast(pl.Int64))
    if dtype == pl.String:
        return df.with_columns(_parse_times(df, source).alias(TIMESTAMP))
    raise _fail(source, None, TIMESTAMP, f"expected numbers, dates or strings, got column type {dtype}")


def _parse_times(df: pl.DataFrame, source: _Source) -> pl.Series:
    """Text timestamps: all Unix times (numbers) or all ISO-8601 dates/times, never a mix."""
    text = df[TIMESTAMP].str.strip_chars()
    as_float = text.cast(pl.Float64, strict=False)
    numeric = as_float.is_not_null()
    if numeric.all():
        bad = as_float.is_nan() | as_float.is_infinite()
        if bad.any():
            raise _fail(
                source,
                _first_bad_row(df, bad),
                TIMESTAMP,
                f"expected a finite Unix time, got {text.filter(bad)[0]!r}",
            )
        as_int = text.cast(pl.Int64, strict=False)
        return as_int if as_int.null_count() == 0 else as_float
    seconds = pl.Series(TIMESTAMP, [None] * len(text), dtype=pl.Int64)
    for _ in range(8):  # each round parses the values of one more ISO-8601 layout
        todo = seconds.is_null() & ~numeric
        if not todo.any():
            break
        try:
            parsed = text.filter(todo).str.to_datetime(strict=False, time_unit="ms")
        except pl.exceptions.PolarsError:
            break  # the first remaining value has no recognisable layout
        if parsed.null_count() == len(parsed):
            break
        filled = seconds.filter(todo).fill_null(parsed.dt.epoch("s").cast(pl.Int64))
        seconds = seconds.scatter(todo.arg_true(), filled)
    if numeric.any() and seconds.is_not_null().any():
        number, date = _first_bad_row(df, numeric), _first_bad_row(df, seconds.is_not_null())
        raise _fail(
            source,
            max(number, date),
            TIMESTAMP,
            f"mixes Unix times (first at {source.unit} {number}: {text.filter(numeric)[0]!r}) and "
            f"ISO-8601 dates (first at {source.unit} {date}: {text.filter(seconds.is_not_null())[0]!r}); "
            "use one kind",
        )
    bad = seconds.is_null() & ~numeric
    if bad.any():
        raise _fail(
            source,
            _first_bad_row(df, bad),
            TIMESTAMP,
            f"cannot parse {text.filter(bad)[0]!r} as a Unix time or an ISO-8601 date/time",
        )
    return seconds


def _to_weight(df: pl.DataFrame, source: _Source) -> pl.DataFrame:
    col = df[WEIGHT]
    if col.dtype == pl.String:
        cast = col.str.strip_chars().cast(pl.Float64, strict=False)
        bad = cast.is_null()
        if bad.any():
            raise _fail(
                source, _first_bad_row(df, bad), WEIGHT, f"expected a number, got {col.filter(bad)[0]!r}"
            )
        col = cast
    elif col.dtype == pl.Boolean:
        col = col.cast(pl.Float64)
    elif not col.dtype.is_numeric():
        raise _fail(source, None, WEIGHT, f"expected numbers, got column type {col.dtype}")
    col = col.cast(pl.Float64)
    bad = col.is_nan() | col.is_infinite() | (col < 0)
    if bad.any():
        raise _fail(
            source,
            _first_bad_row(df, bad),
            WEIGHT,
            f"expected a finite non-negative number, got {col.filter(bad)[0]}",
        )
    return df.with_columns(col.alias(WEIGHT))


def _check_id(df: pl.DataFrame, name: str, source: _Source) -> pl.DataFrame:
    col = df[name]
    if col.dtype.is_float():
        bad = ~col.is_finite() | (col != col.floor()) | (col.abs() > _FLOAT_ID_MAX)
        if bad.any():
            raise _fail(
                source,
                _first_bad_row(df, bad),
                name,
                f"expected an integer or string id (a float id must be a whole number of at most 2^53), "
                f"got {col.filter(bad)[0]}",
            )
        return df.with_columns(pl.col(name).cast(pl.Int64))
    if col.dtype == pl.UInt64:
        big = col > _INT64_MAX
        if big.any():
            raise _fail(
                source,
                _first_bad_row(df, big),
                name,
                f"integer id {col.filter(big)[0]} is beyond 2^63 - 1; store such ids as strings",
            )
        return df.with_columns(pl.col(name).cast(pl.Int64))
    if not (col.dtype.is_integer() or col.dtype == pl.String or col.dtype == pl.Categorical):
        raise _fail(source, None, name, f"expected integer or string ids, got column type {col.dtype}")
    if col.dtype == pl.Categorical:
        return df.with_columns(pl.col(name).cast(pl.String))
    if col.dtype == pl.String:
        empty = col.str.strip_chars() == ""
        if empty.any():
            raise _fail(source, _first_bad_row(df, empty), name, "expected an id, got an empty string")
    return df


def as_polars(df: object, source: str) -> pl.DataFrame:
    """A polars frame as is; a pandas frame converted (index dropped); anything else refused."""
    if isinstance(df, pl.DataFrame):
        return df
    if type(df).__module__.partition(".")[0] == "pandas" and type(df).__name__ == "DataFrame":
        try:
            return pl.from_pandas(df, include_index=False)  # type: ignore[arg-type]
        except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
            raise DataValidationError(
                f"{source}: cannot convert the pandas DataFrame to polars ({exc})"
            ) from exc
    raise DataValidationError(
        f"{source}: expected a polars or pandas DataFrame, got {type(df).__module__}.{type(df).__name__}"
    )


def validate_interactions(
    df: pl.DataFrame,
    *,
    source: str = "interactions",
    first_line: int = 1,
    unit: Literal["line", "row"] = "line",
    duplicates: DuplicatePolicy = "keep",
) -> pl.DataFrame:
    """Check and normalise an interaction table; returns a new frame, never mutates ``df``.

    A missing ``weight`` column means every event weighs 1. ``timestamp`` may be integers or
    floats (Unix seconds), dates/datetimes, or strings holding either; it becomes Unix seconds.
    A pandas frame is converted to polars first. ``unit`` names what a row number counts in
    messages: ``"line"`` for text files, ``"row"`` for tables (Parquet).
    """
    df = as_polars(df, source)
    where = _Source(source, unit)
    if WEIGHT not in df.columns:
        df = df.with_columns(pl.lit(1.0).alias(WEIGHT))
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{source}: missing column(s) {missing}; found {[c for c in df.columns if c != _ROW]}. "
            "Map your columns with load_table(..., columns={'user_id': 'your_user_column', ...})"
        )
    if _ROW not in df.columns:
        df = df.with_columns(pl.int_range(first_line, first_line + df.height, dtype=pl.Int64).alias(_ROW))
    for name in REQUIRED:
        nulls = df[name].is_null()
        if nulls.any():
            raise _fail(where, _first_bad_row(df, nulls), name, "expected a value, got null/empty")
    df = _check_id(df, USER, where)
    df = _check_id(df, ITEM, where)
    df = _to_timestamp(df, where)
    df = _to_weight(df, where)
    key = [USER, ITEM, TIMESTAMP]
    if duplicates != "keep":
        dup = df.select(pl.struct(key).is_duplicated()).to_series()
        if dup.any():
            if duplicates == "raise":
                row = df.filter(dup)
                raise _fail(
                    where,
                    int(row[_ROW][0]),
                    f"{USER}, {ITEM}, {TIMESTAMP}",
                    f"duplicate event ({row[USER][0]!r}, {row[ITEM][0]!r}, {row[TIMESTAMP][0]}); "
                    "choose duplicates='keep', 'sum' or 'first'",
                )
            if duplicates == "first":
                df = df.unique(subset=key, keep="first", maintain_order=True)
            elif duplicates == "sum":
                extras = [c for c in df.columns if c not in (*key, WEIGHT)]
                df = df.group_by(key, maintain_order=True).agg(
                    pl.col(WEIGHT).sum(), *[pl.col(c).first() for c in extras]
                )
            else:
                raise DataValidationError(
                    f"duplicates={duplicates!r}; expected 'keep', 'sum', 'first' or 'raise'"
                )
    ordered = [*REQUIRED, *[c for c in df.columns if c not in REQUIRED and c != _ROW]]
    return df.select(ordered)
