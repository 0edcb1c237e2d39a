"""Item catalogues for the service's business rules, built from the metadata datasets ship with.

The service reads one ``category`` per item (``vitrina serve --catalog``); these builders write
``item_id, category, available`` tables from MovieLens ``u.item``, S3-Rec attribute files, or a
CSV/TSV/Parquet table of your own.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import polars as pl

from vitrina.data.columns import ITEM
from vitrina.data.features import read_attributes
from vitrina.errors import DataValidationError

CATALOG_COLUMNS = ("item_id", "available", "category", "lat", "lon", "value", "segments")


def from_movielens(path: str | Path) -> pl.DataFrame:
    """ml-100k ``u.item``: the category is the item's first genre (in ``u.genre`` order, names from
    ``u.genre`` beside it); items without a genre get ``unknown``."""
    path = Path(path)
    genre_file = path.with_name("u.genre")
    names = _genre_names(genre_file) if genre_file.is_file() else [f"genre-{i}" for i in range(19)]
    ids, categories = [], []
    for n, line in enumerate(path.read_bytes().decode("latin-1").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < 24:
            raise DataValidationError(f"{path}, line {n}: expected 24 '|'-separated fields, got {len(parts)}")
        try:
            ids.append(int(parts[0]))
            flags = [int(x) for x in parts[-19:]]
        except ValueError:
            raise DataValidationError(f"{path}, line {n}: item id and genre flags must be integers") from None
        # "unknown" is genre 0: an item with no other flag is unknown
        first = next((i for i, f in enumerate(flags) if f and i > 0), 0)
        categories.append(names[first])
    return _frame(ids, categories)


def _genre_names(path: Path) -> list[str]:
    names = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        name, _, code = line.partition("|")
        if name and code.strip().isdigit():
            names[int(code)] = name
    return [names.get(i, f"genre-{i}") for i in range(19)]


def from_attributes(path: str | Path) -> pl.DataFrame:
    """S3-Rec ``*_item2attributes.json`` (``{"item": [attribute ids]}``): the category is the
    item's first attribute, written ``attr-<id>`` (the files carry ids, not names)."""
    path = Path(path)
    raw = read_attributes(path)
    ids, categories = [], []
    for key, attrs in raw.items():
        if not isinstance(attrs, list) or not key.strip().isdigit():
            raise DataValidationError(
                f"{path}: item {key!r}: expected an integer id and a list of attribute ids"
            )
        ids.append(int(key))
        categories.append(f"attr-{attrs[0]}" if attrs else "unknown")
    return _frame(ids, categories)


def from_table(path: str | Path, columns: Mapping[str, str] | None = None) -> pl.DataFrame:
    """A CSV/TSV/Parquet table with ``item_id`` and any of the catalogue columns; ``columns`` maps
    catalogue names to yours (``{"item_id": "sku", "category": "dept"}``). Other columns are dropped."""
    path = Path(path)
    try:
        if path.suffix in (".parquet", ".pq"):
            df = pl.read_parquet(path)
        else:
            sep = "\t" if path.suffix in (".tsv", ".tab") else ","
            df = pl.read_csv(path, separator=sep, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataValidationError(f"{path}: cannot read the table ({exc})") from exc
    mapping = dict(columns or {})
    unknown = [k for k in mapping if k not in CATALOG_COLUMNS]
    absent = [v for v in mapping.values() if v not in df.columns]
    if unknown or absent:
        raise DataValidationError(
            f"{path}: columns mapping: unknown target(s) {unknown} (use {', '.join(CATALOG_COLUMNS)}), "
            f"missing in the file {absent}; found {df.columns}"
        )
    df = df.rename({v: k for k, v in mapping.items()})
    if ITEM not in df.columns:
        raise DataValidationError(
            f"{path}: no item_id column; found {df.columns} (map one with --columns item=...)"
        )
    kept = df.select([c for c in CATALOG_COLUMNS if c in df.columns])
    if kept[ITEM].dtype == pl.String:
        as_int = kept[ITEM].str.strip_chars().cast(pl.Int64, strict=False)
        plain = kept[ITEM].str.contains(r"^\s*-?(0|[1-9][0-9]{0,18})\s*$").fill_null(False)
        if plain.all() and as_int.null_count() == 0:  # the same id rule as the event loaders
            kept = kept.with_columns(as_int.alias(ITEM))
    for col in ("lat", "lon", "value"):
        if col in kept.columns and kept[col].dtype == pl.String:
            cast = kept[col].str.strip_chars().cast(pl.Float64, strict=False)
            bad = cast.is_null() & kept[col].is_not_null() & (kept[col].str.strip_chars() != "")
            if bad.any():
                row = int(bad.arg_max() or 0)
                raise DataValidationError(
                    f"{path}, row {row + 1}, column '{col}': expected a number, got {kept[col][row]!r}"
                )
            kept = kept.with_columns(cast.alias(col))
    if "available" not in kept.columns:
        return kept.with_columns(pl.lit(True).alias("available"))
    if kept["available"].dtype == pl.String:
        text = kept["available"].str.strip_chars().str.to_lowercase()
        truth = text.replace_strict(
            {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False},
            default=None,
            return_dtype=pl.Boolean,
        )
        if truth.null_count():
            row = int(truth.is_null().arg_max() or 0)
            raise DataValidationError(
                f"{path}, row {row + 1}, column 'available': expected true or false, "
                f"got {kept['available'][row]!r}"
            )
        kept = kept.with_columns(truth.alias("available"))
    return kept


def _frame(ids: list[int], categories: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {ITEM: ids, "available": [True] * len(ids), "category": categories},
        schema={ITEM: pl.Int64, "available": pl.Boolean, "category": pl.String},
    )


def build_catalog(
    source: str | Path, kind: str | None = None, columns: Mapping[str, str] | None = None
) -> pl.DataFrame:
    """Dispatch on ``kind`` (``movielens``, ``s3rec``, ``table``), inferred from the file name when
    not given (``u.item``; ``*.json``; anything else is a table)."""
    path = Path(source)
    if not path.is_file():
        raise DataValidationError(f"{path}: file not found")
    kind = kind or ("movielens" if path.name == "u.item" else "s3rec" if path.suffix == ".json" else "table")
    if kind == "movielens":
        return from_movielens(path)
    if kind == "s3rec":
        return from_attributes(path)
    if kind == "table":
        return from_table(path, columns)
    raise DataValidationError(f"catalog source kind {kind!r}; expected movielens, s3rec or table")
