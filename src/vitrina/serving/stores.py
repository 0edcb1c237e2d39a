"""Online state: the event log and each user's recent history.

Every row follows the experiments event-log schema (``timestamp``, ``unit_id``, ``experiment``,
``variant``, ``event``, ``value``, ``item_id``, ``propensity``, ``request_id``) plus ``position``, the
0-based slot of an exposed item (logged with exploration). Rows whose event is not ``"exposure"``
and that name an item extend the unit's history, in arrival order.

* :class:`SQLiteStore` (default, no server): SQLite in WAL mode plus an in-process LRU cache of
  histories. ``append`` returns after the transaction commits (``synchronous=FULL`` by default), so
  an acknowledged event survives the process being killed. Several processes may share one file
  (``vitrina serve --workers N``): a cache catches up with every commit before it is read.
* :class:`RedisStore`: a Redis list per user (trimmed to the history length) and a Redis stream
  for the log, written in one MULTI/EXEC; durability is the server's (``appendonly yes``).

Retention: ``prune(before)`` deletes what is older than ``before`` (Unix seconds) from the log and
the histories; the service calls it periodically (``vitrina serve --retention-days``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Literal, Protocol

from vitrina.experiments.schema import EXPOSURE


@dataclass(frozen=True)
class LogRow:
    """One event-log row (experiments schema); ``unit_id`` is the user id as a string."""

    timestamp: float
    unit_id: str
    event: str
    experiment: str | None = None
    variant: str | None = None
    value: float | None = None
    item_id: str | None = None
    propensity: float | None = None
    request_id: str | None = None
    position: int | None = None

    @property
    def extends_history(self) -> bool:
        return self.event != EXPOSURE and self.item_id is not None


COLUMNS = tuple(f.name for f in fields(LogRow))


class EventStore(Protocol):
    """Where events go; ``append`` is durable when it returns."""

    def append(self, rows: Sequence[LogRow]) -> None: ...

    def history(self, unit_id: str) -> list[str]:
        """The unit's most recent item ids (oldest first), at most the store's history length."""
        ...

    def timed_history(self, unit_id: str) -> tuple[list[str], list[float]]:
        """:meth:`history` and each item's event time (Unix seconds), for models that read time."""
        ...

    def prune(self, before: float) -> int:
        """Delete stored events older than ``before`` (Unix seconds); returns the log rows deleted."""
        ...

    def close(self) -> None: ...


#: rows deleted per SQLite transaction when pruning, so that appends interleave with a long prune
PRUNE_BATCH = 5_000


class SQLiteStore:
    """Embedded store: SQLite (WAL) on disk plus an LRU cache of recent histories.

    Writes go through one connection, reads through another (WAL readers never wait for a
    commit's fsync). The cache is kept current from the log itself: before each read and after each
    write, if ``PRAGMA data_version`` says some other connection committed (this store's writer,
    or another process on the same file), the rows past the last one seen are applied to the cached
    users. A cached history remembers the last row id it contains, so a row is applied once even when
    a cache fill already read it.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_history: int = 200,
        cache_users: int = 100_000,
        synchronous: Literal["full", "normal"] = "full",
    ) -> None:
        self.path = Path(path)
        self.max_history = max_history
        self.cache_users = cache_users
        self._write_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        # unit -> ([id of the last row in it], item ids, their event times)
        self._cache: OrderedDict[str, tuple[list[int], list[str], list[float]]] = OrderedDict()
        self._writer = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._writer.execute("PRAGMA journal_mode=WAL")
        self._writer.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cols = "timestamp REAL NOT NULL, unit_id TEXT NOT NULL, event TEXT NOT NULL, experiment TEXT, "
        cols += "variant TEXT, value REAL, item_id TEXT, propensity REAL, request_id TEXT, position INTEGER"
        # AUTOINCREMENT: a pruned row's id is never handed out again, so "rows after the last id
        # seen" (the cache's catch-up, in every process sharing the file) stays exact after deletes
        self._writer.execute(
            f"CREATE TABLE IF NOT EXISTS event_log (id INTEGER PRIMARY KEY AUTOINCREMENT, {cols})"
        )
        table = self._writer.execute("SELECT sql FROM sqlite_master WHERE name = 'event_log'").fetchone()[0]
        self._ids_reused = "AUTOINCREMENT" not in table.upper()  # a state file from before retention
        existing = {r[1] for r in self._writer.execute("PRAGMA table_info(event_log)")}
        if "position" not in existing:  # a state file from before exploration logging
            self._writer.execute("ALTER TABLE event_log ADD COLUMN position INTEGER")
        self._writer.execute("CREATE INDEX IF NOT EXISTS event_log_unit ON event_log (unit_id, id)")
        self._reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._version = self._data_version()
        self._seen_id = int(self._reader.execute("SELECT coalesce(max(id), 0) FROM event_log").fetchone()[0])

    def _data_version(self) -> int:
        return int(self._reader.execute("PRAGMA data_version").fetchone()[0])

    def _catch_up(self) -> None:
        """Apply rows committed since the last call to the cached histories (caller holds the cache
        lock). Row ids are assigned under SQLite's write lock, so they follow the commit order."""
        version = self._data_version()
        if version == self._version:
            return
        self._version = version
        found = self._reader.execute(
            "SELECT id, unit_id, event, item_id, timestamp FROM event_log WHERE id > ? ORDER BY id",
            (self._seen_id,),
        ).fetchall()
        for row_id, unit_id, event, item_id, timestamp in found:
            entry = self._cache.get(unit_id)
            if entry is not None and event != EXPOSURE and item_id is not None and row_id > entry[0][0]:
                entry[0][0] = row_id
                entry[1].append(item_id)
                entry[2].append(timestamp)
                excess = max(0, len(entry[1]) - self.max_history)
                del entry[1][:excess], entry[2][:excess]
        if found:
            self._seen_id = found[-1][0]

    def append(self, rows: Sequence[LogRow]) -> None:
        sql = f"INSERT INTO event_log ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                for r in rows:
                    self._writer.execute(sql, astuple(r))
                self._writer.execute("COMMIT")
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
        with self._cache_lock:  # so that a read right after this returns sees the write
            self._catch_up()

    def _entry(self, unit_id: str) -> tuple[list[int], list[str], list[float]]:
        """The unit's cache entry, read from the log on a miss (caller holds the cache lock)."""
        self._catch_up()
        entry = self._cache.get(unit_id)
        if entry is None:
            found = self._reader.execute(
                "SELECT id, item_id, timestamp FROM event_log WHERE unit_id = ? AND event != ? "
                "AND item_id IS NOT NULL ORDER BY id DESC LIMIT ?",
                (unit_id, EXPOSURE, self.max_history),
            ).fetchall()
            found.reverse()
            entry = ([found[-1][0] if found else 0], [r[1] for r in found], [r[2] for r in found])
            self._cache[unit_id] = entry
            if len(self._cache) > self.cache_users:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(unit_id)
        return entry

    def history(self, unit_id: str) -> list[str]:
        with self._cache_lock:
            return list(self._entry(unit_id)[1])

    def timed_history(self, unit_id: str) -> tuple[list[str], list[float]]:
        with self._cache_lock:
            _, items, times = self._entry(unit_id)
            return list(items), list(times)

    def prune(self, before: float) -> int:
        """Delete log rows whose event ``timestamp`` is before ``before``, in batches; the history
        cache is dropped (histories are read from the log again). In a state file from before
        retention, whose ids SQLite may reuse, the last row is kept so that no id is reused."""
        keep_last = " AND id < (SELECT max(id) FROM event_log)" if self._ids_reused else ""
        total = 0
        while True:
            with self._write_lock:
                old = f"SELECT id FROM event_log WHERE timestamp < ?{keep_last} LIMIT ?"
                sql = f"DELETE FROM event_log WHERE id IN ({old})"
                deleted = self._writer.execute(sql, (before, PRUNE_BATCH)).rowcount
            total += deleted
            if deleted < PRUNE_BATCH:
                break
        with self._cache_lock:
            self._cache.clear()
        return total

    def rows(self) -> list[LogRow]:
        """The whole log in arrival order (for export and tests)."""
        with self._cache_lock:
            found = self._reader.execute(f"SELECT {', '.join(COLUMNS)} FROM event_log ORDER BY id").fetchall()
        return [LogRow(*r) for r in found]

    def close(self) -> None:
        with self._write_lock, self._cache_lock:
            self._reader.close()
            self._writer.close()


def read_sqlite_log(path: str | Path) -> list[LogRow]:
    """The whole event log of a SQLite state file in arrival order, opened read-only (safe while the
    service runs: WAL readers never block the writer)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"state database {path} does not exist (see `vitrina serve --state-db`)")
    con = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
    try:
        names = {r[1] for r in con.execute("PRAGMA table_info(event_log)")}
        if not names:
            raise ValueError(f"{path} has no event_log table; is it a vitrina state database?")
        cols = [c if c in names else f"NULL AS {c}" for c in COLUMNS]
        found = con.execute(f"SELECT {', '.join(cols)} FROM event_log ORDER BY id").fetchall()
    finally:
        con.close()
    return [LogRow(*r) for r in found]


class RedisStore:
    """Online store on Redis: ``{prefix}:hist:{unit}`` lists and the ``{prefix}:log`` stream."""

    def __init__(self, url: str, *, prefix: str = "vitrina", max_history: int = 200) -> None:
        import redis

        self.prefix = prefix
        self.max_history = max_history
        self._redis = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2.0)
        self._redis.ping()

    def _key(self, unit_id: str) -> str:
        return f"{self.prefix}:hist:{unit_id}"

    def _times_key(self, unit_id: str) -> str:
        return f"{self.prefix}:time:{unit_id}"

    def append(self, rows: Sequence[LogRow]) -> None:
        pipe = self._redis.pipeline(transaction=True)
        touched = set()
        for r in rows:
            entry = {k: "" if v is None else str(v) for k, v in zip(COLUMNS, astuple(r), strict=True)}
            pipe.xadd(f"{self.prefix}:log", entry)  # type: ignore[arg-type]
            if r.extends_history:
                pipe.rpush(self._key(r.unit_id), r.item_id)  # type: ignore[arg-type]
                pipe.rpush(self._times_key(r.unit_id), repr(r.timestamp))
                touched.add(r.unit_id)
        for unit in touched:
            pipe.ltrim(self._key(unit), -self.max_history, -1)
            pipe.ltrim(self._times_key(unit), -self.max_history, -1)
        pipe.execute()

    def history(self, unit_id: str) -> list[str]:
        return list(self._redis.lrange(self._key(unit_id), -self.max_history, -1))  # type: ignore[arg-type]

    def timed_history(self, unit_id: str) -> tuple[list[str], list[float]]:
        """Items and times come from two lists written together (see :meth:`_aligned`)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.lrange(self._key(unit_id), -self.max_history, -1)
        pipe.lrange(self._times_key(unit_id), -self.max_history, -1)
        items, raw = pipe.execute()
        return self._aligned(items, raw)

    @staticmethod
    def _aligned(items: list[str], raw: list[str]) -> tuple[list[str], list[float]]:
        """Items with one time each: items logged before times were kept (an older state) take
        the earliest stored time, or 0 when none is stored."""
        times = [float(t) for t in raw][-len(items) :] if items else []
        return list(items), [times[0] if times else 0.0] * (len(items) - len(times)) + times

    def prune(self, before: float) -> int:
        """Trim the log stream to entries that arrived at or after ``before`` (stream ids are the
        Redis server's arrival milliseconds), and drop history items whose event time is before it."""
        deleted = int(self._redis.xtrim(f"{self.prefix}:log", minid=int(before * 1000), approximate=False))  # type: ignore[arg-type]
        start = len(self._key(""))
        for key in self._redis.scan_iter(f"{self.prefix}:hist:*"):
            self._prune_history(str(key)[start:], before)
        return deleted

    def _prune_history(self, unit_id: str, before: float) -> None:
        """Rewrite one user's item and time lists without the old items; retried if an append races."""
        import redis

        keys = self._key(unit_id), self._times_key(unit_id)
        with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(*keys)
                    items, times = self._aligned(pipe.lrange(keys[0], 0, -1), pipe.lrange(keys[1], 0, -1))  # type: ignore[arg-type]
                    keep = [i for i, t in enumerate(times) if t >= before]
                    if len(keep) == len(items):
                        pipe.unwatch()
                        return
                    pipe.multi()
                    pipe.delete(*keys)
                    if keep:
                        pipe.rpush(keys[0], *[items[i] for i in keep])
                        pipe.rpush(keys[1], *[repr(times[i]) for i in keep])
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def rows(self) -> list[LogRow]:
        """The whole log stream in arrival order (for export and tests)."""
        out = []
        for _, entry in self._redis.xrange(f"{self.prefix}:log"):  # type: ignore[union-attr]
            vals = {k: (entry.get(k) or None) for k in COLUMNS}
            for num in ("timestamp", "value", "propensity"):
                vals[num] = float(vals[num]) if vals[num] is not None else None
            vals["position"] = int(vals["position"]) if vals["position"] is not None else None
            out.append(LogRow(**vals))  # type: ignore[arg-type]
        return out

    def close(self) -> None:
        self._redis.close()
