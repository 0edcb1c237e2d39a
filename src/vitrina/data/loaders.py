"""Readers for the formats recommender data comes in. Each returns a validated interaction table.

Every error names the file and line. Gzip (``.gz``) files are read transparently.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import polars as pl

from vitrina.data.columns import ITEM, TIMESTAMP, USER, WEIGHT
from vitrina.data.interactions import LINE_COLUMN, DuplicatePolicy, validate_interactions
from vitrina.errors import DataValidationError

Format = Literal["movielens", "s3rec", "s3rec-ts", "pairs", "csv", "tsv", "parquet"]


def _check_file(path: Path) -> None:
    """Refuse a path that is not a readable regular file, saying which of the three it is."""
    if path.is_dir():
        raise DataValidationError(f"{path}: is a directory; give the data file inside it")
    if not path.is_file():
        raise DataValidationError(f"{path}: file not found")


def _read_bytes(path: Path) -> bytes:
    path = Path(path)
    _check_file(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataValidationError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataValidationError(f"{path}: not a valid gzip file ({exc})") from exc
    return raw


def _text(path: Path, raw: bytes, encoding: str = "utf-8") -> str:
    """Decode strictly (a bad byte is refused, never replaced), naming the line of the first bad byte."""
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataValidationError(f"{path}, line {line}: not valid {encoding} text ({exc.reason})") from exc
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise DataValidationError(f"{path}, line {line}: contains a NUL byte; is this a binary file?")
    return text.removeprefix("\ufeff")


def _lines(path: Path, encoding: str = "utf-8", text: str | None = None) -> pl.DataFrame:
    """Non-empty lines of a text file, with their 1-based line numbers in ``line``. Only ``\\n``
    (optionally after ``\\r``) ends a line, as in every line-numbering editor and in ``wc -l``."""
    if text is None:
        text = _text(path, _read_bytes(path), encoding)
    lines = pl.Series("text", text.split("\n"), dtype=pl.String).str.strip_suffix("\r")
    if text.endswith("\n"):
        lines = lines.head(-1)
    return pl.DataFrame({"text": lines, "line": pl.int_range(1, len(lines) + 1, eager=True)}).filter(
        pl.col("text").str.strip_chars() != ""
    )


def _read_delimited(path: Path, sep: str) -> pl.DataFrame:
    """A delimited text table with a header line, every field a string (blank -> null), and the
    source line of each row in ``LINE_COLUMN``. Every row must have the header's number of fields."""
    text = _text(path, _read_bytes(path))
    if '"' in text:  # quoted fields may hold separators and newlines: parse record by record
        records = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
        rows, starts, start = [], [], 1
        try:
            for record in records:
                if any(f.strip() for f in record):
                    rows.append(record)
                    starts.append(start)
                start = records.line_num + 1
        except csv.Error as exc:
            raise DataValidationError(f"{path}, line {records.line_num}: malformed CSV ({exc})") from exc
        table = pl.DataFrame(
            {"parts": pl.Series(rows, dtype=pl.List(pl.String)), "line": pl.Series(starts, dtype=pl.Int64)}
        )
    else:
        table = _lines(path, text=text).select(pl.col("text").str.split(sep).alias("parts"), "line")
    if table.height == 0:
        raise DataValidationError(f"{path}: empty file; expected a header line and data rows")
    header: list[str] = table["parts"][0].to_list()
    header_line = table["line"][0]
    for j, name in enumerate(header):
        if name in header[:j]:
            raise DataValidationError(
                f"{path}, line {header_line}: column {name!r} appears twice in the header"
            )
    table = table.slice(1)
    bad = table.filter(pl.col("parts").list.len() != len(header))
    if bad.height:
        row = bad.row(0, named=True)
        raise DataValidationError(
            f"{path}, line {row['line']}: expected {len(header)} fields ({', '.join(header)}) separated by "
            f"{sep!r}, got {len(row['parts'])}"
        )
    field = pl.col("parts").list
    return table.select(
        *[
            pl.when(field.get(j).str.strip_chars() != "").then(field.get(j)).alias(name)
            for j, name in enumerate(header)
        ],
        pl.col("line").alias(LINE_COLUMN),
    )


def _split_fields(path: Path, lines: pl.DataFrame, sep: str, names: list[str]) -> pl.DataFrame:
    """Split each line on ``sep`` into exactly ``len(names)`` fields, else fail naming the line."""
    parts = lines.with_columns(pl.col("text").str.split(sep).alias("parts"))
    n = len(names)
    bad = parts.filter(pl.col("parts").list.len() != n)
    if bad.height:
        row = bad.row(0, named=True)
        raise DataValidationError(
            f"{path}, line {row['line']}: expected {n} fields ({', '.join(names)}) separated by {sep!r}, "
            f"got {len(row['parts'])}: {row['text'][:80]!r}"
        )
    return parts.select(
        "line", *[pl.col("parts").list.get(i).str.strip_chars().alias(name) for i, name in enumerate(names)]
    )


def _cast(
    path: Path, df: pl.DataFrame, columns: list[str], dtype: type[pl.DataType] = pl.Int64
) -> pl.DataFrame:
    """Cast text fields to ``dtype``, failing on the first value that is not one, naming its line."""
    expected = "an integer" if dtype == pl.Int64 else "a number"
    for col in columns:
        cast = df[col].cast(dtype, strict=False)
        bad = cast.is_null()
        if bad.any():
            row = df.filter(bad).row(0, named=True)
            raise DataValidationError(
                f"{path}, line {row['line']}, field '{col}': expected {expected}, got {row[col]!r}"
            )
        df = df.with_columns(cast.alias(col))
    return df


def _finish(path: Path, df: pl.DataFrame, duplicates: DuplicatePolicy = "keep") -> pl.DataFrame:
    """Validate, reporting errors at the exact source lines."""
    return validate_interactions(df.rename({"line": LINE_COLUMN}), source=str(path), duplicates=duplicates)


def load_movielens(path: str | Path, *, duplicates: DuplicatePolicy = "keep") -> pl.DataFrame:
    """MovieLens ratings: ``u.data`` (ml-100k, TAB) or ``ratings.dat`` (ml-1m and later, ``::``).

    ``weight`` holds the rating (explicit feedback); use :func:`vitrina.data.filtering.to_implicit`
    to binarise. Also reads the ml-1m pairs file (``UserID::MovieID``, no rating or time), where
    ``timestamp`` is the row position and ``weight`` is 1.
    """
    path = Path(path)
    lines = _lines(path, encoding="latin-1")
    if lines.height == 0:
        raise DataValidationError(f"{path}: no ratings found (empty file)")
    first = lines["text"][0]
    sep = "::" if "::" in first else "\t"
    n_fields = len(first.split(sep))
    if n_fields == 2 and sep == "::":
        df = _cast(path, _split_fields(path, lines, sep, [USER, ITEM]), [USER, ITEM])
        df = df.with_columns(pl.col("line").cast(pl.Int64).alias(TIMESTAMP), pl.lit(1.0).alias(WEIGHT))
    else:
        df = _split_fields(path, lines, sep, [USER, ITEM, WEIGHT, TIMESTAMP])
        df = _cast(path, _cast(path, df, [USER, ITEM, TIMESTAMP]), [WEIGHT], pl.Float64)
    return _finish(path, df, duplicates)


def load_s3rec(path: str | Path) -> pl.DataFrame:
    """S3-Rec sequence text: ``user item item ...`` per line, chronological.

    There are no times; ``timestamp`` is the position in the line (0, 1, ...), which is the order.
    """
    path = Path(path)
    lines = _lines(path)
    if lines.height == 0:
        raise DataValidationError(f"{path}: no sequences found (empty file)")
    tokens = lines.with_columns(pl.col("text").str.strip_chars().str.split(" ").alias("tok"))
    short = tokens.filter(pl.col("tok").list.len() < 2)
    if short.height:
        row = short.row(0, named=True)
        raise DataValidationError(
            f"{path}, line {row['line']}: expected 'user item [item ...]', got {row['text'][:80]!r}"
        )
    df = tokens.select(
        "line",
        pl.col("tok").list.first().alias(USER),
        pl.col("tok").list.slice(1).alias(ITEM),
    ).explode(ITEM)
    empty = df[ITEM] == ""
    if empty.any():
        row = df.filter(empty).row(0, named=True)
        raise DataValidationError(f"{path}, line {row['line']}: two spaces in a row (empty item id)")
    df = _cast(path, df, [USER, ITEM])
    df = df.with_columns(pl.int_range(pl.len()).over("line").alias(TIMESTAMP), pl.lit(1.0).alias(WEIGHT))
    users = df.group_by(USER).agg(pl.col("line").n_unique().alias("n"), pl.col("line").min().alias("l"))
    dup = users.filter(pl.col("n") > 1)
    if dup.height:
        row = dup.row(0, named=True)
        raise DataValidationError(
            f"{path}: user {row[USER]} appears on more than one line (first at line {row['l']})"
        )
    return _finish(path, df)


def load_pairs(path: str | Path) -> pl.DataFrame:
    """``user item`` pairs, one per line, chronological within each user (SASRec's format).

    ``timestamp`` is the position within the user's events (file order).
    """
    path = Path(path)
    lines = _lines(path)
    if lines.height == 0:
        raise DataValidationError(f"{path}: no interactions found (empty file)")
    df = _cast(
        path,
        _split_fields(path, lines.with_columns(pl.col("text").str.strip_chars()), " ", [USER, ITEM]),
        [USER, ITEM],
    )
    df = df.with_columns(pl.int_range(pl.len()).over(USER).alias(TIMESTAMP), pl.lit(1.0).alias(WEIGHT))
    return _finish(path, df)


def _integer_ids(col: pl.Series) -> pl.Series:
    """The id rule for text tables: a column whose every id is a plain decimal integer (optional
    minus, no leading zeros, fits 64 bits) becomes Int64, so a CSV of MovieLens gives the same ids
    as the MovieLens loader; any other column stays strings exactly as written ("007" != "7")."""
    text = col.str.strip_chars()
    plain = text.str.contains(r"^-?(0|[1-9][0-9]{0,18})$").fill_null(False)
    if not plain.all():
        return col
    as_int = text.cast(pl.Int64, strict=False)
    return as_int if as_int.null_count() == 0 else col


def load_table(
    path: str | Path,
    *,
    format: Literal["csv", "tsv", "parquet"] | None = None,
    columns: Mapping[str, str] | None = None,
    separator: str | None = None,
    duplicates: DuplicatePolicy = "keep",
) -> pl.DataFrame:
    """A CSV/TSV/Parquet table; ``columns`` maps vitrina names to yours, e.g.
    ``{"user_id": "visitorid", "item_id": "itemid", "timestamp": "ts"}``. Other columns are kept.

    Ids in CSV/TSV are integers when every id of the column is a plain integer, else strings as
    written; Parquet keeps its column types.
    """
    path = Path(path)
    fmt = format or (
        "parquet" if path.suffix == ".parquet" else "tsv" if path.suffix in (".tsv", ".tab") else "csv"
    )
    if fmt == "parquet":
        _check_file(path)
        try:
            df = pl.read_parquet(path)
        except Exception as exc:  # polars raises several types for corrupt files
            raise DataValidationError(f"{path}: not a readable Parquet file ({exc})") from exc
    else:
        df = _read_delimited(path, separator or ("\t" if fmt == "tsv" else ","))
    if df.height == 0:
        raise DataValidationError(f"{path}: no data rows (only a header or an empty table)")
    mapping = dict(columns or {})
    unknown = [k for k in mapping if k not in (USER, ITEM, TIMESTAMP, WEIGHT)]
    if unknown:
        raise DataValidationError(
            f"columns mapping: unknown target(s) {unknown}; use user_id, item_id, timestamp, weight"
        )
    absent = [v for v in mapping.values() if v not in df.columns]
    if absent:
        raise DataValidationError(
            f"{path}: column(s) {absent} named in the mapping are not in the file; "
            f"found {[c for c in df.columns if c != LINE_COLUMN]}"
        )
    df = df.rename({v: k for k, v in mapping.items()})
    if fmt != "parquet":
        df = df.with_columns(*(_integer_ids(df[c]) for c in (USER, ITEM) if c in df.columns))
    if WEIGHT in df.columns and df[WEIGHT].dtype == pl.String:
        df = df.with_columns(pl.col(WEIGHT).str.strip_chars())
    unit = "row" if fmt == "parquet" else "line"  # a Parquet file has rows, not lines
    return validate_interactions(df, source=str(path), unit=unit, duplicates=duplicates)


def load_s3rec_timestamped(path: str | Path) -> pl.DataFrame:
    """S3-Rec interactions with absolute times: TAB-separated ``user_id item_id timestamp`` with a
    header, integer ids, Unix seconds, each user's rows in sequence order. Events with equal times
    (day-resolution reviews) keep the file's order everywhere downstream (stable sorts)."""
    df = load_table(path, format="tsv")
    for col in (USER, ITEM):
        cast = df[col].cast(pl.Int64, strict=False)
        bad = cast.is_null()
        if bad.any():
            line = int(bad.arg_max() or 0) + 2  # + header, 1-based
            raise DataValidationError(
                f"{path}, line {line}, field '{col}': expected an integer id, got {df[col][line - 2]!r}"
            )
        df = df.with_columns(cast.alias(col))
    return df


def load(path: str | Path, format: Format, **kwargs: object) -> pl.DataFrame:
    """Dispatch on ``format``."""
    readers = {
        "movielens": load_movielens,
        "s3rec": load_s3rec,
        "s3rec-ts": load_s3rec_timestamped,
        "pairs": load_pairs,
    }
    if format in readers:
        return readers[format](path, **kwargs)  # type: ignore[operator]
    if format in ("csv", "tsv", "parquet"):
        return load_table(path, format=format, **kwargs)  # type: ignore[arg-type]
    raise DataValidationError(
        f"unknown format {format!r}; expected one of movielens, s3rec, s3rec-ts, pairs, csv, tsv, parquet"
    )
