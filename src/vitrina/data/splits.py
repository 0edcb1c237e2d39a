"""Leak-free splits. Ties in ``timestamp`` are broken by the original row order (stable sort).

* :func:`leave_one_out`: per user, the last event -> test, the second-to-last -> validation (of
  every user, or of a random sample of users), the rest -> train. Users with fewer than 3 events
  (2 without validation) stay wholly in train, so every evaluated user has a training event.
* :func:`temporal_split`: one global cutoff time. Train = events strictly before the cutoff;
  test = events at or after it, only for users seen in train; optionally without items unseen
  in train (cold items) and without (user, item) pairs already in train. A validation part, if
  asked for, is cut from the end of train the same way.
* :func:`user_ratio_split`: per user, the newest fraction of events -> test (and validation).
* :func:`rolling_windows`: time-based cross-validation, several global temporal splits whose
  test periods move forward in time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np
import polars as pl

from vitrina.data.columns import ITEM, TIMESTAMP, USER
from vitrina.data.interactions import validate_interactions
from vitrina.errors import ConfigError

_ROW = "__split_row"
_DAY = 86_400


@dataclass(frozen=True)
class Split:
    """Three disjoint parts of one interaction table."""

    train: pl.DataFrame
    validation: pl.DataFrame
    test: pl.DataFrame
    #: test events removed by each filter of a temporal split (cold users, cold items, seen pairs)
    removed: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        sizes = {
            f"{name}_{what}": value
            for name, df in (("train", self.train), ("validation", self.validation), ("test", self.test))
            for what, value in (("events", df.height), ("users", df[USER].n_unique()))
        }
        return sizes | {f"test_removed_{why}": n for why, n in self.removed.items()}


def _ordered(df: pl.DataFrame) -> pl.DataFrame:
    df = validate_interactions(df).with_row_index(_ROW)
    return df.sort([USER, TIMESTAMP, _ROW])


def leave_one_out(
    df: pl.DataFrame, *, validation: bool = True, validation_users: int | None = None, seed: int = 0
) -> Split:
    """Last event per user -> test; second-to-last -> validation (if ``validation``); rest -> train.

    ``validation_users``: validate on that many users only, drawn at random with ``seed``; every
    other user's second-to-last event stays in train. Early stopping needs a sample, not every
    user, and holding out everyone's second-to-last event removes each user's most recent
    transition from training (on Beauty, 12% of the training events, and those closest in time to
    the test events). Test events are the same either way. ``None``: every user is validated.
    """
    if validation_users is not None and (not validation or validation_users < 1):
        raise ConfigError(
            f"leave_one_out: validation_users must be >= 1 and needs validation=True, got "
            f"{validation_users} (validation={validation})"
        )
    ordered = _ordered(df).with_columns(
        (pl.len().over(USER) - pl.int_range(pl.len()).over(USER) - 1).alias("_from_end"),
        pl.len().over(USER).alias("_n"),
    )
    held = 2 if validation else 1
    eligible = pl.col("_n") >= held + 1
    validated = eligible
    if validation_users is not None:
        users = ordered.filter(eligible)[USER].unique().sort()
        if validation_users < users.len():
            picked = np.random.default_rng(seed).choice(users.len(), validation_users, replace=False)
            validated = eligible & pl.col(USER).is_in(users.gather(picked).implode())
    test = ordered.filter(eligible & (pl.col("_from_end") == 0))
    val = ordered.filter(validated & (pl.col("_from_end") == 1)) if validation else ordered.clear()
    train = ordered.filter(
        ~eligible | (pl.col("_from_end") >= held) | (~validated & (pl.col("_from_end") == 1))
    )
    return Split(*(_restore(part) for part in (train, val, test)))


def _restore(part: pl.DataFrame) -> pl.DataFrame:
    """Back to the original row order, without helper columns."""
    return part.sort(_ROW).drop([c for c in part.columns if c.startswith("_")])


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _cutoff_seconds(
    df: pl.DataFrame, cutoff: datetime | date | str | float | None, last_days: float | None
) -> float:
    if (cutoff is None) == (last_days is None):
        raise ConfigError(
            "temporal_split: give exactly one of cutoff (a date/time or Unix seconds) or last_days"
        )
    if last_days is not None:
        if last_days <= 0:
            raise ConfigError(f"temporal_split: last_days must be > 0, got {last_days}")
        return float(df[TIMESTAMP].max()) - last_days * _DAY
    if isinstance(cutoff, str):
        try:
            cutoff = datetime.fromisoformat(cutoff)
        except ValueError as exc:
            raise ConfigError(
                f"temporal_split: cutoff {cutoff!r} is not an ISO date/time (e.g. 2003-01-01)"
            ) from exc
    if isinstance(cutoff, datetime):
        return (cutoff if cutoff.tzinfo else cutoff.replace(tzinfo=UTC)).timestamp()
    if isinstance(cutoff, date):
        return datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC).timestamp()
    return float(cutoff)  # type: ignore[arg-type]


def temporal_split(
    df: pl.DataFrame,
    *,
    cutoff: datetime | date | str | float | None = None,
    last_days: float | None = None,
    validation_days: float | None = None,
    filter_cold_items: bool = True,
    filter_seen: bool = True,
) -> Split:
    """Global time split at ``cutoff`` (or ``last_days`` before the newest event); naive
    datetimes are UTC. ``validation_days`` cuts a validation part from the end of train."""
    ordered = _ordered(df)
    t = _cutoff_seconds(ordered, cutoff, last_days)
    train = ordered.filter(pl.col(TIMESTAMP) < t)
    test = ordered.filter(pl.col(TIMESTAMP) >= t)
    if train.height == 0 or test.height == 0:
        lo, hi = ordered[TIMESTAMP].min(), ordered[TIMESTAMP].max()
        raise ConfigError(f"temporal_split: cutoff {t} leaves an empty part; timestamps span [{lo}, {hi}]")
    val = ordered.clear()
    if validation_days is not None:
        inner = temporal_split(
            _restore(train),
            last_days=validation_days,
            filter_cold_items=filter_cold_items,
            filter_seen=filter_seen,
        )
        kept, removed = _test_part(train, test, filter_cold_items, filter_seen)
        return Split(inner.train, inner.validation.vstack(inner.test), _restore(kept), removed)
    kept, removed = _test_part(train, test, filter_cold_items, filter_seen)
    return Split(_restore(train), _restore(val), _restore(kept), removed)


def _test_part(
    train: pl.DataFrame, test: pl.DataFrame, cold_items: bool, seen: bool
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Test events of users known in train (optionally also without cold items and seen pairs),
    and how many events each filter removed, in that order."""
    removed = {}
    before = test.height
    test = test.join(train.select(USER).unique(), on=USER, how="semi")
    removed["cold_users"], before = before - test.height, test.height
    if cold_items:
        test = test.join(train.select(ITEM).unique(), on=ITEM, how="semi")
        removed["cold_items"], before = before - test.height, test.height
    if seen:
        test = test.join(train.select(USER, ITEM).unique(), on=[USER, ITEM], how="anti")
        removed["seen_pairs"] = before - test.height
    return test, removed


def user_ratio_split(
    df: pl.DataFrame,
    *,
    test_ratio: float = 0.2,
    validation_ratio: float = 0.0,
    filter_seen: bool = True,
) -> Split:
    """Per-user temporal ratio split: each user's newest ``test_ratio`` of events -> test, the
    ``validation_ratio`` before them -> validation, the rest -> train.

    Per user, ``n_test = max(1, floor(n * test_ratio))`` (and likewise ``n_val`` when
    ``validation_ratio > 0``); a user keeps at least one training event: users too short for a
    test part stay wholly in train, users too short for a validation part too are tested without
    one, so the test part is the same whatever ``validation_ratio``. Leak-free per user (every
    held-out event of a user is at or after each of that user's training events; ties keep the
    row order); it does not align users in time, so other users' later events can be in train —
    use :func:`temporal_split` or :func:`rolling_windows` when that matters. ``filter_seen`` drops
    test events whose (user, item) pair is in train or validation, and validation events whose
    pair is in train: they can never be recommended.
    """
    for name, value in (("test_ratio", test_ratio), ("validation_ratio", validation_ratio)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"user_ratio_split: {name} must be in [0, 1), got {value}")
    if test_ratio == 0.0 or test_ratio + validation_ratio >= 1.0:
        raise ConfigError(
            f"user_ratio_split: need 0 < test_ratio and test_ratio + validation_ratio < 1, got "
            f"{test_ratio} + {validation_ratio}"
        )
    ordered = _ordered(df).with_columns(
        (pl.len().over(USER) - pl.int_range(pl.len()).over(USER) - 1).alias("_from_end"),
        pl.len().over(USER).alias("_n"),
    )
    n_test = pl.max_horizontal((pl.col("_n") * test_ratio).floor().cast(pl.Int64), pl.lit(1))
    n_val = (
        pl.max_horizontal((pl.col("_n") * validation_ratio).floor().cast(pl.Int64), pl.lit(1))
        if validation_ratio > 0
        else pl.lit(0)
    )
    ordered = ordered.with_columns(n_test.alias("_n_test"), n_val.alias("_n_val"))
    tested = pl.col("_n") >= pl.col("_n_test") + 1
    validated = pl.col("_n") >= pl.col("_n_test") + pl.col("_n_val") + 1
    is_test = tested & (pl.col("_from_end") < pl.col("_n_test"))
    is_val = validated & ~is_test & (pl.col("_from_end") < pl.col("_n_test") + pl.col("_n_val"))
    train = ordered.filter(~is_test & ~is_val)
    test, val = ordered.filter(is_test), ordered.filter(is_val)
    if filter_seen:
        before = pl.concat([train, val]).select(USER, ITEM).unique()
        test = test.join(before, on=[USER, ITEM], how="anti")
        val = val.join(train.select(USER, ITEM).unique(), on=[USER, ITEM], how="anti")
    return Split(*(_restore(part) for part in (train, val, test)))


def rolling_windows(
    df: pl.DataFrame,
    *,
    n_windows: int,
    test_days: float,
    step_days: float | None = None,
    train_days: float | None = None,
    validation_days: float | None = None,
    filter_cold_items: bool = True,
    filter_seen: bool = True,
) -> list[Split]:
    """Time-based cross-validation: ``n_windows`` global temporal splits, oldest first.

    Window ``j`` tests on ``[t_j, t_j + test_days)``, where the last window ends one second after
    the newest event and each earlier one starts ``step_days`` (default ``test_days``: back to
    back, no overlap) before the next. Train is every event before ``t_j`` (expanding window), or
    only the last ``train_days`` before it (sliding window); events after the test period are
    never used. Each window is a :func:`temporal_split` of its events, so test users are seen in
    train, and cold items and already-seen pairs are filtered as there.
    """
    if n_windows < 1 or test_days <= 0:
        raise ConfigError(
            f"rolling_windows: need n_windows >= 1 and test_days > 0, got {n_windows}, {test_days}"
        )
    step = test_days if step_days is None else step_days
    if step <= 0 or (train_days is not None and train_days <= 0):
        raise ConfigError(f"rolling_windows: step_days and train_days must be > 0, got {step}, {train_days}")
    ordered = _restore(_ordered(df))
    first, end = float(ordered[TIMESTAMP].min()), float(ordered[TIMESTAMP].max()) + 1.0
    splits = []
    for j in range(n_windows):
        start = end - test_days * _DAY - (n_windows - 1 - j) * step * _DAY
        if start <= first:
            raise ConfigError(
                f"rolling_windows: window {j + 1} of {n_windows} would test from {_iso(start)}, but the "
                f"events begin at {_iso(first)}, leaving nothing to train on; use fewer windows or "
                f"shorter test_days / step_days (the events span {(end - first) / _DAY:.1f} days)"
            )
        window = ordered.filter(pl.col(TIMESTAMP) < start + test_days * _DAY)
        if train_days is not None:
            window = window.filter(pl.col(TIMESTAMP) >= start - train_days * _DAY)
        try:
            split = temporal_split(
                window,
                cutoff=start,
                validation_days=validation_days,
                filter_cold_items=filter_cold_items,
                filter_seen=filter_seen,
            )
        except ConfigError as exc:
            raise ConfigError(f"rolling_windows: window {j + 1} of {n_windows}: {exc}") from None
        splits.append(split)
    return splits
