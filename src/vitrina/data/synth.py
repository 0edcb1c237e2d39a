"""Synthetic interaction logs with the structure of real ones, at any size, in bounded memory.

The generative story (all of it vectorised over users; events are produced in user chunks and
streamed to Parquet, so 20M events need a few hundred MB):

* **Items** have Zipf popularity (weight ``1 / rank**zipf``, exponent 0.8 by default, ranks
  shuffled over item ids), a category, and coordinates scattered around their category's centre.
* **Users** have heavy-tailed activity (log-normal event counts, at least ``min_user_events``),
  a favourite category, and an active window inside the date range; their event times are
  sorted uniform draws inside that window.
* **Each event** after a user's first is, in this order of preference: a *repeat* of one of the
  user's recent items (probability ``repeat``), a *transition* to one of the previous item's
  successors (probability ``transition``), or a fresh *popularity* draw — from the favourite
  category with probability ``taste``, else from the whole catalogue.
* **Drift**: every item has ``phases`` successor lists, one per equal slice of the date range, so
  the item→next-item dynamics change over time (as trends do), and the newest events follow the
  newest dynamics.

Everything is drawn from ``numpy.random.default_rng`` seeded by ``seed`` (and the chunk number),
so a seed gives the same file on every machine and numpy version with the same generator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from vitrina.data.columns import ITEM, TIMESTAMP, USER, WEIGHT
from vitrina.errors import ConfigError

#: users generated per chunk: bounds memory (events of one chunk + a few arrays per event)
CHUNK_USERS = 100_000


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of :func:`synth_events` (see the module docstring for their meaning)."""

    events: int
    users: int
    items: int
    seed: int = 0
    categories: int = 50
    start: str = "2024-01-01"
    days: float = 365.0
    zipf: float = 0.8
    activity_sigma: float = 1.2
    min_user_events: int = 3
    transition: float = 0.5
    repeat: float = 0.0
    taste: float = 0.5
    successors: int = 8
    phases: int = 3

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first parameter out of range."""
        ints = {
            "events": self.events,
            "users": self.users,
            "items": self.items,
            "categories": self.categories,
        }
        for name, value in ints.items():
            if value < 1:
                raise ConfigError(f"synth: {name} must be >= 1, got {value}")
        if self.min_user_events < 1:
            raise ConfigError(f"synth: min_user_events must be >= 1, got {self.min_user_events}")
        if self.events < self.users * self.min_user_events:
            raise ConfigError(
                f"synth: {self.events} events cannot give {self.users} users {self.min_user_events} "
                f"events each; raise --events to at least {self.users * self.min_user_events} "
                "or lower --users"
            )
        if self.categories > self.items:
            raise ConfigError(f"synth: categories ({self.categories}) cannot exceed items ({self.items})")
        for name in ("transition", "repeat", "taste"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"synth: {name} is a probability in [0, 1], got {p}")
        if self.transition + self.repeat > 1.0:
            raise ConfigError(
                f"synth: transition + repeat must be <= 1, got {self.transition} + {self.repeat}"
            )
        if self.days <= 0 or self.zipf < 0 or self.activity_sigma < 0:
            raise ConfigError(
                f"synth: need days > 0, zipf >= 0, activity_sigma >= 0; got days={self.days}, "
                f"zipf={self.zipf}, activity_sigma={self.activity_sigma}"
            )
        if self.successors < 1 or self.phases < 1:
            raise ConfigError(
                f"synth: successors and phases must be >= 1, got {self.successors}, {self.phases}"
            )
        _start_seconds(self.start)


def _start_seconds(start: str) -> int:
    try:
        day = date.fromisoformat(start)
    except ValueError:
        raise ConfigError(f"synth: start must be an ISO date like 2024-01-01, got {start!r}") from None
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


@dataclass(frozen=True)
class _World:
    """Item-side structure shared by all users."""

    order: np.ndarray  # items sorted by category (then popularity): position -> item id
    cum_weight: np.ndarray  # cumulative popularity weight along ``order``
    cat_bounds: np.ndarray  # category c spans positions [cat_bounds[c], cat_bounds[c + 1])
    category: np.ndarray  # item id -> category
    successors: np.ndarray  # (phases, items, successors) item ids
    successor_cdf: np.ndarray  # (successors,) cumulative choice probability of each slot
    lat: np.ndarray
    lon: np.ndarray


def _draw_items(world: _World, rng: np.random.Generator, cats: np.ndarray | None, n: int) -> np.ndarray:
    """``n`` items by popularity, each from its category in ``cats`` (``None`` or -1: whole catalogue)."""
    cw = world.cum_weight
    if cats is None:
        lo, hi = np.zeros(n), np.full(n, cw[-1])
    else:
        start = np.where(cats >= 0, world.cat_bounds[cats], 0)
        stop = np.where(cats >= 0, world.cat_bounds[cats + 1], len(cw))
        lo = np.where(start > 0, cw[np.maximum(start - 1, 0)], 0.0)
        hi = cw[stop - 1]
    target = lo + rng.random(n) * (hi - lo)
    pos = np.minimum(np.searchsorted(cw, target, side="right"), len(cw) - 1)
    return world.order[pos]


def _build_world(cfg: SynthConfig, rng: np.random.Generator) -> _World:
    n = cfg.items
    weight = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** cfg.zipf
    weight = weight[rng.permutation(n)]  # item id -> weight, popularity unrelated to the id
    # category sizes are themselves skewed; every category gets at least one item
    cat_share = rng.dirichlet(np.full(cfg.categories, 2.0))
    sizes = 1 + rng.multinomial(n - cfg.categories, cat_share)
    category = np.repeat(np.arange(cfg.categories), sizes)[rng.permutation(n)]
    order = np.lexsort((-weight, category))
    cat_bounds = np.concatenate([[0], np.cumsum(sizes)])
    centre = np.column_stack([rng.uniform(-60, 60, cfg.categories), rng.uniform(-180, 180, cfg.categories)])
    lat = np.clip(centre[category, 0] + rng.normal(0, 5, n), -90, 90)
    lon = (centre[category, 1] + rng.normal(0, 5, n) + 180) % 360 - 180
    world = _World(order, np.cumsum(weight[order]), cat_bounds, category, np.empty(0), np.empty(0), lat, lon)
    # successors: 80% from the item's own category, by popularity; slot j chosen with weight 1/(j+1)
    s = cfg.successors
    succ = np.empty((cfg.phases, n, s), dtype=np.int32)
    for phase in range(cfg.phases):
        own = rng.random((n, s)) < 0.8
        cats = np.repeat(category, s).reshape(n, s)
        drawn = _draw_items(world, rng, cats[own], int(own.sum()))
        block = np.empty((n, s), dtype=np.int64)
        block[own] = drawn
        block[~own] = _draw_items(world, rng, None, int((~own).sum()))
        succ[phase] = block
    slot = 1.0 / np.arange(1, s + 1)
    return _World(order, world.cum_weight, cat_bounds, category, succ, np.cumsum(slot / slot.sum()), lat, lon)


def _user_counts(cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Events per user: ``min_user_events`` each plus a log-normal share of the rest (sums to ``events``)."""
    share = rng.lognormal(0.0, cfg.activity_sigma, cfg.users)
    extra = rng.multinomial(cfg.events - cfg.users * cfg.min_user_events, share / share.sum())
    return extra + cfg.min_user_events


def _chunk(
    cfg: SynthConfig, world: _World, users: np.ndarray, counts: np.ndarray, t0: int, rng: np.random.Generator
) -> pa.Table:
    """Events of ``users`` (with ``counts`` events each) as an Arrow table, users in order."""
    # longest first, so the users still active at step t are a prefix
    by_len = np.argsort(-counts, kind="stable")
    users, counts = users[by_len], counts[by_len]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    total = int(offsets[-1])
    span = cfg.days * 86_400.0
    # active window: a random start, and a length that grows with activity
    length = span * np.minimum(1.0, rng.beta(1.0, 3.0, len(users)) + counts / counts.max() * 0.5)
    begin = rng.random(len(users)) * (span - length)
    # sorted uniforms in each window: normalised cumulative exponential gaps
    gaps = rng.exponential(size=total)
    csum = np.cumsum(gaps)
    seg_end = csum[offsets[1:] - 1]
    seg_start = np.concatenate([[0.0], seg_end[:-1]])
    owner = np.repeat(np.arange(len(users)), counts)
    frac = (csum - seg_start[owner]) / (
        seg_end[owner] - seg_start[owner] + rng.exponential(size=len(users))[owner]
    )
    seconds = begin[owner] + frac * length[owner]
    phase = np.minimum((seconds / span * cfg.phases).astype(np.int64), cfg.phases - 1)
    favourite = world.category[_draw_items(world, rng, None, len(users))]

    items = np.empty(total, dtype=np.int64)
    active = np.searchsorted(-counts, -np.arange(1, int(counts.max()) + 1), side="right")
    for step, n in enumerate(active):
        pos = offsets[:n] + step
        cats = np.where(rng.random(n) < cfg.taste, favourite[:n], -1)
        fresh = _draw_items(world, rng, cats, n)
        if step == 0:
            items[pos] = fresh
            continue
        r = rng.random(n)
        prev = items[pos - 1]
        slot = np.searchsorted(world.successor_cdf, rng.random(n), side="right")
        slot = np.minimum(slot, cfg.successors - 1)
        nxt = np.where(r < cfg.transition, world.successors[phase[pos], prev, slot], fresh)
        if cfg.repeat > 0:
            back = 1 + np.minimum(rng.geometric(0.3, n) - 1, step - 1)
            nxt = np.where(r >= 1.0 - cfg.repeat, items[pos - back], nxt)
        items[pos] = nxt
    return pa.table(
        {
            USER: pa.array(users[owner], pa.int64()),
            ITEM: pa.array(items, pa.int64()),
            TIMESTAMP: pa.array(t0 + seconds.astype(np.int64), pa.int64()),
            WEIGHT: pa.array(np.ones(total, np.float32)),
        }
    )


def _chunks(cfg: SynthConfig) -> tuple[_World, Iterator[pa.Table]]:
    cfg.check()
    base = np.random.default_rng([cfg.seed, 0])
    world = _build_world(cfg, base)
    counts = _user_counts(cfg, base)
    t0 = _start_seconds(cfg.start)

    def gen() -> Iterator[pa.Table]:
        for number, start in enumerate(range(0, cfg.users, CHUNK_USERS), start=1):
            stop = min(start + CHUNK_USERS, cfg.users)
            rng = np.random.default_rng([cfg.seed, number])
            yield _chunk(cfg, world, np.arange(start, stop), counts[start:stop], t0, rng)

    return world, gen()


def synth_events(cfg: SynthConfig) -> pl.DataFrame:
    """The whole log in memory (``user_id, item_id, timestamp, weight``), for small sizes and tests."""
    _, chunks = _chunks(cfg)
    return pl.from_arrow(pa.concat_tables(list(chunks)))  # type: ignore[return-value]


def item_table(cfg: SynthConfig) -> pl.DataFrame:
    """The catalogue of a synthetic log: ``item_id, category, lat, lon`` (``vitrina serve --catalog``)."""
    world, _ = _chunks(cfg)
    return _items_frame(world)


def _items_frame(world: _World) -> pl.DataFrame:
    return pl.DataFrame(
        {
            ITEM: np.arange(len(world.category), dtype=np.int64),
            "category": world.category,
            "lat": world.lat,
            "lon": world.lon,
        }
    ).with_columns(pl.format("c{}", pl.col("category").cast(pl.String).str.zfill(3)).alias("category"))


def write_synth(
    cfg: SynthConfig, output: str | Path, progress: Callable[[int, int], None] | None = None
) -> tuple[Path, Path]:
    """Stream the log to ``output`` (Parquet, one row group per user chunk) and its catalogue to
    ``<output stem>.items.parquet``; returns both paths. ``progress(events_done, events_total)``."""
    output = Path(output)
    if output.suffix != ".parquet":
        raise ConfigError(f"synth: --output must end in .parquet, got {output}")
    output.parent.mkdir(parents=True, exist_ok=True)
    world, chunks = _chunks(cfg)
    done = 0
    with pq.ParquetWriter(output, _SCHEMA) as writer:
        for table in chunks:
            writer.write_table(table)
            done += table.num_rows
            if progress is not None:
                progress(done, cfg.events)
    items_path = output.with_suffix(".items.parquet")
    _items_frame(world).write_parquet(items_path)
    return output, items_path


_SCHEMA = pa.schema([(USER, pa.int64()), (ITEM, pa.int64()), (TIMESTAMP, pa.int64()), (WEIGHT, pa.float32())])

__all__ = ["CHUNK_USERS", "SynthConfig", "item_table", "synth_events", "write_synth"]
