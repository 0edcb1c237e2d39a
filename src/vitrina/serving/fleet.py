"""What the worker processes of ``vitrina serve --workers N`` share, through a folder private to the run.

* ``models.json``: the swap record, ``{"generation": g, "models": {key: {"path", "version"}}}`` with
  ``key`` ``"default"`` or ``"experiment/variant"``: every hot swap so far, the latest per key. The
  worker that takes ``POST /admin/model`` writes it (under ``models.lock``, atomically replaced);
  every worker polls it and loads what changed in the background, then swaps its reference in
  place, as a single process does (no process is restarted, no connection closed).
* ``worker-<pid>``: the generation that worker has caught up with, and the worker's start time (a
  process that later gets the same pid is not taken for it). The swapping worker answers when
  every live worker has reached its generation, so the answer means "the whole service serves it".
* ``metrics-<pid>.json``: that worker's counters (:meth:`Metrics.snapshot`), rewritten when they
  change; ``/metrics`` adds up all of them. Files of workers that died stay: counters never go back.

Plain JSON files and ``flock``: the same with the SQLite store and with Redis, no server needed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vitrina.serving.metrics import Snapshot

log = logging.getLogger("vitrina.serving")

#: key of the default model in the swap record (a variant's key always holds a "/")
DEFAULT = "default"


@dataclass(frozen=True)
class Source:
    """Where a served bundle came from: its folder and the version loaded from it."""

    path: str
    version: str


@dataclass(frozen=True)
class Record:
    """The swap record: a generation (bumped by every swap) and the latest source per key."""

    generation: int = 0
    models: dict[str, Source] = field(default_factory=dict)


def _started(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), None if there is no such process:
    with the pid it names one process, even after the pid is reused (Linux ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22; the name before ")" may hold spaces


def _write(path: Path, text: str) -> None:
    """Replace ``path`` atomically: a reader sees the old content or the new, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


class Fleet:
    """One worker's handle on the shared folder (``pid``: this worker)."""

    def __init__(self, folder: Path, pid: int | None = None) -> None:
        self.folder = folder
        self.pid = os.getpid() if pid is None else pid
        self._record = folder / "models.json"
        self._lock = folder / "models.lock"

    # ----------------------------------------------------------------- swap record
    def read(self) -> Record:
        """The current record (generation 0 and no models before the first swap)."""
        try:
            raw = json.loads(self._record.read_text())
        except FileNotFoundError:
            return Record()
        return Record(raw["generation"], {k: Source(**v) for k, v in raw["models"].items()})

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Holds the record's lock (between processes): one swap is published at a time."""
        with self._lock.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def publish(self, key: str, source: Source) -> int:
        """Record ``source`` as the model of ``key``; returns the new generation (hold :meth:`locked`)."""
        record = self.read()
        models = {k: asdict(v) for k, v in {**record.models, key: source}.items()}
        generation = record.generation + 1
        _write(self._record, json.dumps({"generation": generation, "models": models}))
        return generation

    # ----------------------------------------------------------------- acknowledgements
    def caught_up(self, generation: int) -> None:
        """Say that this worker serves everything up to ``generation``."""
        _write(self.folder / f"worker-{self.pid}", f"{generation} {_started(self.pid)}")

    def leave(self) -> None:
        """This worker stops: nobody waits for it any more."""
        (self.folder / f"worker-{self.pid}").unlink(missing_ok=True)

    def behind(self, generation: int) -> list[int]:
        """Live workers that have not reached ``generation`` (files of dead ones are removed)."""
        late = []
        for path in self.folder.glob("worker-*"):
            pid = int(path.name.removeprefix("worker-"))
            try:
                reached, started = path.read_text().split()
            except FileNotFoundError:  # it left
                continue
            if _started(pid) != started:
                path.unlink(missing_ok=True)
            elif int(reached) < generation:
                late.append(pid)
        return late

    def wait(self, generation: int, timeout_s: float, poll_s: float = 0.05) -> list[int]:
        """Wait until every live worker serves ``generation``; returns those still behind at the timeout."""
        deadline = time.monotonic() + timeout_s
        while (late := self.behind(generation)) and time.monotonic() < deadline:
            time.sleep(poll_s)
        return late

    # ----------------------------------------------------------------- metrics
    def write_metrics(self, snapshot: Snapshot) -> None:
        _write(self.folder / f"metrics-{self.pid}.json", json.dumps(snapshot))

    def peer_metrics(self) -> list[Snapshot]:
        """The latest snapshots of every other worker, dead ones included."""
        out = []
        for path in self.folder.glob("metrics-*.json"):
            if path.name != f"metrics-{self.pid}.json":
                with suppress(FileNotFoundError, json.JSONDecodeError):
                    out.append(json.loads(path.read_text()))
        return out
