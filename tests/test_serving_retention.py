"""Retention of stored events (issue 12): ``--retention-days`` deletes old events from the log and
the histories of both stores, at start and periodically."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from vitrina.cli import app as cli
from vitrina.models.registry import make_model
from vitrina.serving import stores
from vitrina.serving.app import create_app
from vitrina.serving.settings import Settings
from vitrina.serving.stores import EventStore, LogRow, SQLiteStore

DAY = 86_400


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    from test_serving_state import open_store

    with open_store(request.param, tmp_path, max_history=5) as s:
        yield s


def _log(store: EventStore, now: float) -> None:
    store.append(
        [
            LogRow(now - 3 * DAY, "u", "click", item_id="old"),
            LogRow(now - 3 * DAY, "u", "exposure", "exp", "a", 1.0, item_id="x"),
            LogRow(now - 2 * DAY, "v", "purchase", value=2.0, item_id="gone"),
            LogRow(now - 10, "u", "click", item_id="new"),
            LogRow(now - 3 * DAY, "u", "click", item_id="late"),  # arrived last, happened long ago
        ]
    )


def test_prune_drops_old_events_from_histories_and_the_log(store: EventStore) -> None:
    now = time.time()
    _log(store, now)
    assert store.history("u") == ["old", "new", "late"] and store.history("v") == ["gone"]  # cached
    deleted = store.prune(now - DAY)
    assert store.history("u") == ["new"] and store.history("v") == []
    assert store.timed_history("u") == (["new"], [now - 10])
    log = store.rows()  # type: ignore[attr-defined]
    if isinstance(store, SQLiteStore):  # the log by each event's own time
        assert deleted == 4 and [r.item_id for r in log] == ["new"]
    else:  # the stream by arrival: everything here arrived just now
        assert deleted == 0 and len(log) == 5
        assert store.prune(time.time() + 1) == 5 and store.rows() == []  # type: ignore[attr-defined]
    store.append([LogRow(now, "u", "click", item_id="next")])
    assert store.history("u")[-1] == "next"


def test_sqlite_prune_works_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stores, "PRUNE_BATCH", 3)
    s = SQLiteStore(tmp_path / "s.db")
    s.append([LogRow(100.0 + i, "u", "click", item_id=str(i)) for i in range(10)])
    assert s.prune(108.0) == 8 and s.history("u") == ["8", "9"]
    s.close()


def test_sqlite_ids_are_never_reused_after_a_prune(tmp_path: Path) -> None:
    """Two processes share a state file (``--workers``): one prunes every row, the last included,
    then appends; the other's cached history must still see the new rows."""
    a, b = SQLiteStore(tmp_path / "s.db"), SQLiteStore(tmp_path / "s.db")
    a.append([LogRow(100.0, "u", "click", item_id="1"), LogRow(100.0, "u", "click", item_id="2")])
    assert b.history("u") == ["1", "2"]  # b caches the history and the last row id it has seen
    assert a.prune(200.0) == 2
    a.append([LogRow(300.0, "u", "click", item_id="3")])
    assert a.history("u") == ["3"]
    assert b.history("u")[-1] == "3"  # b still holds pruned rows until its own pass clears its cache
    b.prune(200.0)
    assert b.history("u") == ["3"]
    a.close()
    b.close()


def test_sqlite_state_from_before_retention_keeps_its_last_row(tmp_path: Path) -> None:
    """An older table lets SQLite reuse the highest id once it is deleted; pruning keeps that row."""
    import sqlite3

    con = sqlite3.connect(tmp_path / "s.db")
    cols = ", ".join(
        f"{c} {'REAL' if c in ('timestamp', 'value', 'propensity') else 'TEXT'}" for c in stores.COLUMNS
    )
    con.execute(f"CREATE TABLE event_log (id INTEGER PRIMARY KEY, {cols})")
    con.commit()
    con.close()
    s = SQLiteStore(tmp_path / "s.db")
    s.append([LogRow(100.0 + i, "u", "click", item_id=str(i)) for i in range(3)])
    assert s.history("u") == ["0", "1", "2"]
    assert s.prune(1000.0) == 2 and s.history("u") == ["2"]
    s.append([LogRow(2000.0, "u", "click", item_id="3")])
    assert s.history("u") == ["2", "3"]
    s.close()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, ml100k_head: pl.DataFrame) -> Path:
    return make_model("popular").fit(ml100k_head).save(tmp_path_factory.mktemp("m") / "popular")


def test_service_prunes_at_start_and_on_its_schedule(tmp_path: Path, model_dir: Path) -> None:
    state = tmp_path / "s.db"
    now = time.time()
    SQLiteStore(state).append([LogRow(now - 40 * DAY, "u", "click", item_id="1")])
    settings = Settings(model_dir=model_dir, state_db=state, retention_days=30, prune_interval_s=3600)
    with TestClient(create_app(settings)) as c:
        service = c.app.state.vitrina["service"]  # type: ignore[attr-defined]
        deadline = time.monotonic() + 30
        while service.store.history("u") and time.monotonic() < deadline:  # the pass at start
            time.sleep(0.05)
        assert service.store.history("u") == []
        events = [
            {"user_id": "w", "event": "click", "item_id": 2, "timestamp": now - 31 * DAY},
            {"user_id": "w", "event": "click", "item_id": 3, "timestamp": now - 29 * DAY},
        ]
        assert c.post("/events", json={"events": events}).status_code == 200
        assert service.store.history("w") == ["2", "3"]  # stored until the next pass
        assert service.retention.prune() == 1
        assert service.store.history("w") == ["3"]


def test_retention_days_must_be_positive(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model_dir: Path
) -> None:
    started: list[Settings] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **_: started.append(app.state.vitrina["settings"]))
    args = ["serve", str(model_dir), "--state-db", str(tmp_path / "s.db")]
    for bad in ("0", "-1", "nan", "inf"):
        result = CliRunner().invoke(cli, [*args, "--retention-days", bad])
        assert result.exit_code == 2 and "--retention-days" in result.output, result.output
    assert CliRunner().invoke(cli, [*args, "--retention-days", "7.5"]).exit_code == 0
    assert started[-1].retention_days == 7.5
