"""Item feature matrices (for intra-list diversity): attributes shipped beside a dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from vitrina.data.idmap import IdMap
from vitrina.errors import DataValidationError


def attributes_json(path: str | Path, items: IdMap) -> sp.csr_matrix:
    """S3-Rec ``*_item2attributes.json`` (``{"item": [attr, ...]}``) as a binary items x attributes matrix
    aligned with ``items``; items without attributes get an empty row. An attribute listed twice for
    one item is still 1 (one-hot), never 2."""
    path = Path(path)
    raw = read_attributes(path)
    keys = list(raw)
    ext = pl.Series(keys).cast(items.dtype, strict=False)
    rows = items.to_internal(ext, strict=False)
    r, c = [], []
    for row, key in zip(rows, keys, strict=True):
        if row < 0:
            continue
        attrs = raw[key]
        if not isinstance(attrs, list):
            raise DataValidationError(
                f"{path}: item {key}: expected a list of attribute ids, got {type(attrs).__name__}"
            )
        bad = [a for a in attrs if isinstance(a, bool) or not isinstance(a, int) or a < 0]
        if bad:
            raise DataValidationError(
                f"{path}: item {key}: expected non-negative integer attribute ids, got {bad[0]!r}"
            )
        r.extend([row] * len(attrs))
        c.extend(attrs)
    n_attr = (max(c) + 1) if c else 0
    matrix = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(items), n_attr))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def movielens_genres(path: str | Path, items: IdMap) -> sp.csr_matrix:
    """ml-100k ``u.item`` genre flags (last 19 ``|`` fields) aligned with ``items``."""
    path = Path(path)
    lines = path.read_bytes().decode("latin-1").splitlines()
    ids, flags = [], []
    for n, line in enumerate(lines, 1):
        parts = line.split("|")
        if len(parts) < 24:
            raise DataValidationError(f"{path}, line {n}: expected 24 '|'-separated fields, got {len(parts)}")
        ids.append(int(parts[0]))
        flags.append([int(x) for x in parts[-19:]])
    rows = items.to_internal(pl.Series(ids).cast(items.dtype, strict=False), strict=False)
    mat = np.zeros((len(items), 19), np.float32)
    ok = rows >= 0
    mat[rows[ok]] = np.asarray(flags, np.float32)[ok]
    return sp.csr_matrix(mat)


def item_features_for(dataset_path: Path, fmt: str, items: IdMap) -> sp.csr_matrix | None:
    """Known feature files next to a dataset file, if any."""
    if fmt == "s3rec":
        attr = dataset_path.with_name(dataset_path.stem + "_item2attributes.json")
        return attributes_json(attr, items) if attr.is_file() else None
    if fmt == "s3rec-ts":  # <data>/timestamps/Beauty_s3rec_with_ts.tsv.gz -> <data>/s3rec/Beauty_...
        name = dataset_path.name.partition("_")[0]
        attr = dataset_path.parent.parent / "s3rec" / f"{name}_item2attributes.json"
        return attributes_json(attr, items) if attr.is_file() else None
    if fmt == "movielens" and dataset_path.name == "u.data":
        genres = dataset_path.with_name("u.item")
        return movielens_genres(genres, items) if genres.is_file() else None
    return None


def read_attributes(path: Path) -> dict[str, Any]:
    """The parsed S3-Rec ``*_item2attributes.json`` object, or an error naming the file."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataValidationError(f"{path}: cannot read item attributes ({exc})") from exc
    if not isinstance(raw, dict):
        raise DataValidationError(f"{path}: expected an object {{item_id: [attribute ids]}}")
    return raw
