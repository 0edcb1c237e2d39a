"""Batch scoring: top-k for many users into one Parquet file, in bounded memory, embedded or on Ray.

Users are scored in chunks of ``chunk_users`` with :meth:`Recommender.recommend` (so the filters
are the Python API's: seen items, allow and deny lists) and each chunk is appended to the file as a
row group: memory holds the model and one chunk, not the output. The file is written under a
temporary name and renamed when complete, so an interrupted run never leaves a partial file behind.

On Ray (``address``), the users are cut into shards that a pool of actors scores with Ray Data; the
model directory's files travel through the object store (no shared filesystem needed) and each
actor loads them once, checksums verified. The driver streams the shards back in order into the
same single file, so both paths write the same rows.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from vitrina.errors import ConfigError, DataValidationError, VitrinaError
from vitrina.models.base import Recommender, load_model

Progress = Callable[[int, int], None]


class BatchScoringError(VitrinaError, RuntimeError):
    """Scoring on a Ray cluster failed (a worker died or raised); the message carries Ray's reason."""


@dataclass(frozen=True)
class BatchOptions:
    """What to compute for every user: the arguments of :meth:`Recommender.recommend`."""

    k: int = 10
    exclude_seen: bool = True
    allow_items: Sequence[Any] | None = None
    deny_items: Sequence[Any] | None = None
    chunk_users: int = 4096

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")
        if self.chunk_users < 1:
            raise ConfigError(f"chunk_users must be >= 1, got {self.chunk_users}")


def read_ids(path: Path, column: str) -> pl.Series:
    """Ids from a file: Parquet (column ``column``, or its only column) or text, one id per line
    (a first line equal to ``column`` is a header)."""
    if not path.is_file():
        raise DataValidationError(f"{path}: no such file")
    if path.suffix == ".parquet":
        try:
            frame = pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise DataValidationError(f"{path}: not a readable Parquet file ({exc})") from None
        if column not in frame.columns and frame.width != 1:
            raise DataValidationError(
                f"{path}: needs a '{column}' column (or exactly one column), has {frame.columns}"
            )
        return frame[column if column in frame.columns else frame.columns[0]]
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"{path}: not a text file of ids, one per line ({exc})") from None
    if lines and lines[0].strip() == column:
        lines = lines[1:]
    return pl.Series(column, [line.strip() for line in lines if line.strip()])


def resolve_users(
    model: Recommender, users: pl.Series | None, *, source: str, skip_unknown: bool
) -> np.ndarray:
    """Internal indices of ``users`` (all users when None); unknown ids raise, naming rows of ``source``,
    unless ``skip_unknown``."""
    if users is None:
        return np.arange(len(model.users_), dtype=np.int64)
    internal = model.users_.to_internal(users, strict=False)
    unknown = np.flatnonzero(internal < 0)
    if len(unknown) and not skip_unknown:
        rows = ", ".join(f"id no. {i + 1} ({users[int(i)]!r})" for i in unknown[:5])
        raise DataValidationError(
            f"{source}: {len(unknown)} user id(s) not in the model's training data, e.g. {rows}; "
            "remove them or pass --skip-unknown"
        )
    return internal[internal >= 0]


def score_chunk(model: Recommender, user_idx: np.ndarray, opts: BatchOptions) -> pa.Table:
    """``user_id, item_id, score, rank`` for the users at internal indices ``user_idx``."""
    return model.recommend(
        model.users_.to_external(user_idx),
        opts.k,
        exclude_seen=opts.exclude_seen,
        allow_items=opts.allow_items,
        deny_items=opts.deny_items,
    ).to_arrow()


def _shards(user_idx: np.ndarray, size: int) -> list[np.ndarray]:
    return [user_idx[i : i + size] for i in range(0, len(user_idx), size)]


def _embedded(model: Recommender, user_idx: np.ndarray, opts: BatchOptions) -> Iterator[tuple[pa.Table, int]]:
    for shard in _shards(user_idx, opts.chunk_users):
        yield score_chunk(model, shard, opts), len(shard)


class _RayScorer:
    """A Ray actor: the model rebuilt once from its files, then one shard per call."""

    def __init__(self, files: Any, opts: BatchOptions) -> None:
        import ray

        with tempfile.TemporaryDirectory(prefix="vitrina-model-") as tmp:
            for name, data in ray.get(files[0]).items():
                (Path(tmp) / name).write_bytes(data)
            self.model = load_model(tmp)
        self.opts = opts

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        table = score_chunk(self.model, batch["data"], self.opts)
        return table.append_column("n_users", pa.array(np.full(table.num_rows, len(batch["data"]))))


def _on_ray(
    model_dir: Path, user_idx: np.ndarray, opts: BatchOptions, address: str
) -> Iterator[tuple[pa.Table, int]]:
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'vitrina[ray]'") from None
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"--ray {address}: cannot connect to a Ray cluster there ({exc})") from None
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        files = {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()}
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        shards = _shards(user_idx, opts.chunk_users)
        ds = ray.data.from_numpy(shards or [user_idx]).map_batches(
            _RayScorer,
            fn_constructor_args=([ray.put(files)], opts),  # in a list: Ray passes the reference as is
            batch_size=None,
            batch_format="numpy",
            concurrency=(1, min(workers, max(1, len(shards)))),
            num_cpus=1,
        )
        # one batch per shard: a shard may score to no rows (every item filtered), so the number
        # of users it covers travels with its rows and is counted from the first row
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            done = int(batch["n_users"][0].as_py()) if batch.num_rows else 0
            yield batch.drop_columns(["n_users"]), done
    except ray.exceptions.RayError as exc:
        raise BatchScoringError(f"scoring on Ray at {address} failed: {exc}") from None
    finally:
        if started:
            ray.shutdown()


def recommend_to_parquet(
    model_dir: str | Path,
    output: str | Path,
    opts: BatchOptions,
    *,
    users: pl.Series | None = None,
    users_source: str = "users",
    skip_unknown: bool = False,
    ray_address: str | None = None,
    progress: Progress | None = None,
) -> int:
    """Write the top-``k`` of ``users`` (external ids; None: every user) to one Parquet file with
    the columns of :meth:`Recommender.recommend`; return the number of users scored (unknown ones
    skipped with ``skip_unknown`` are not)."""
    model_dir, output = Path(model_dir), Path(output)
    model = load_model(model_dir)
    user_idx = resolve_users(model, users, source=users_source, skip_unknown=skip_unknown)
    schema = score_chunk(model, user_idx[:0], opts).schema
    chunks = (
        _embedded(model, user_idx, opts)
        if ray_address is None
        else _on_ray(model_dir, user_idx, opts, ray_address)
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    done = 0
    try:
        with pq.ParquetWriter(partial, schema) as writer:
            for table, n_users in chunks:
                if table.num_rows:
                    writer.write_table(table.cast(schema))
                done += n_users
                if progress is not None:
                    progress(done, len(user_idx))
        partial.replace(output)
        if progress is not None:
            progress(len(user_idx), len(user_idx))
    finally:
        partial.unlink(missing_ok=True)
    return len(user_idx)
