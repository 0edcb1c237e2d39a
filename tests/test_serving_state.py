"""Serving state and components: stores (SQLite, Redis), crash safety, calibration, ANN, catalogue."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from vitrina.errors import DataValidationError
from vitrina.models.registry import make_model
from vitrina.serving.ann import AnnIndex
from vitrina.serving.app import create_app
from vitrina.serving.calibration import ExpectedValueModel, fit_calibrator
from vitrina.serving.catalog import Catalog
from vitrina.serving.fleet import Fleet
from vitrina.serving.metrics import Metrics
from vitrina.serving.service import Service
from vitrina.serving.settings import Settings
from vitrina.serving.stores import EventStore, LogRow, RedisStore, SQLiteStore

REDIS_URL = os.environ.get("VITRINA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TOKEN = "t0ken"


def redis_or_skip() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(
            f"no redis-server reachable at {REDIS_URL} ({exc}); set VITRINA_TEST_REDIS_URL or start one"
        )
    return REDIS_URL


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, ml100k_head: pl.DataFrame) -> Path:
    return make_model("ease", {"l2": 100.0}).fit(ml100k_head).save(tmp_path_factory.mktemp("m") / "ease")


@contextmanager
def open_store(kind: str, tmp_path: Path, max_history: int) -> Iterator[EventStore]:
    """A fresh ``sqlite`` or ``redis`` store (Redis keys under a unique prefix, deleted afterwards)."""
    if kind == "sqlite":
        s: EventStore = SQLiteStore(tmp_path / "s.db", max_history=max_history)
    else:
        s = RedisStore(redis_or_skip(), prefix=f"test-{uuid.uuid4().hex}", max_history=max_history)
    try:
        yield s
    finally:
        if isinstance(s, RedisStore):
            for key in s._redis.scan_iter(f"{s.prefix}:*"):
                s._redis.delete(key)
        s.close()


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    with open_store(request.param, tmp_path, max_history=3) as s:
        yield s


# ----------------------------------------------------------------------------- stores
def test_store_history_and_log(store: EventStore) -> None:
    assert store.history("u") == []
    rows = [LogRow(1.0, "u", "click", item_id=str(i)) for i in range(5)]
    rows.append(LogRow(2.0, "u", "exposure", "exp", "a", 1.0, item_id="9", request_id="r"))
    rows.append(LogRow(3.0, "v", "purchase", value=9.5, item_id="7", propensity=0.25))
    store.append(rows)
    assert store.history("u") == ["2", "3", "4"]  # trimmed to max_history=3, exposures excluded
    store.append([LogRow(4.0, "u", "click", item_id="5")])
    assert store.history("u") == ["3", "4", "5"]
    assert store.history("v") == ["7"]
    log = store.rows()  # type: ignore[attr-defined]
    assert len(log) == 8 and log[5] == rows[5] and log[6] == rows[6]


def test_sqlite_cache_never_duplicates_a_racing_write(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "s.db")
    s.append([LogRow(1.0, "u", "click", item_id="1")])
    assert s.history("u") == ["1"]  # cached, row id 1
    s._cache["u"][0][0] = 2  # pretend the cache fill already saw the next row
    s.append([LogRow(1.0, "u", "click", item_id="2")])
    assert s.history("u") == ["1"]
    s.close()
    assert SQLiteStore(tmp_path / "s.db").history("u") == ["1", "2"]


def test_sqlite_stores_sharing_a_file_see_each_others_writes(tmp_path: Path) -> None:
    """Two processes of `vitrina serve --workers 2` each hold a store on one file: a history one of
    them has cached must not go stale when the other records an event."""
    a, b = SQLiteStore(tmp_path / "s.db", max_history=3), SQLiteStore(tmp_path / "s.db", max_history=3)
    a.append([LogRow(1.0, "u", "click", item_id="1")])
    assert a.history("u") == b.history("u") == ["1"]  # both cached
    b.append([LogRow(2.0, "u", "click", item_id=str(i)) for i in (2, 3)])
    b.append([LogRow(2.5, "u", "exposure", "exp", "a", 1.0, item_id="8")])
    a.append([LogRow(3.0, "u", "click", item_id="4"), LogRow(3.0, "w", "click", item_id="5")])
    assert a.history("u") == b.history("u") == ["2", "3", "4"]
    assert a.history("w") == b.history("w") == ["5"]
    a.close()
    b.close()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_events_drive_recommendations_on_both_stores(backend: str, tmp_path: Path, model_dir: Path) -> None:
    extra = (
        {"redis_url": redis_or_skip(), "redis_prefix": f"test-{uuid.uuid4().hex}"}
        if backend == "redis"
        else {}
    )
    settings = Settings(model_dir=model_dir, state_db=tmp_path / "s.db", **extra)  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as c:
        first = c.post("/recommend", json={"user_id": "anna", "k": 5}).json()
        assert first["fallback_reason"] == "unknown_user"
        c.post("/events", json={"events": [{"user_id": "anna", "item_id": 50, "event": "click"}]})
        second = c.post("/recommend", json={"user_id": "anna", "k": 5}).json()
        assert second["fallback_reason"] == "unknown_user_history"
        assert [x["item_id"] for x in second["items"]] == [
            x["item_id"] for x in c.post("/recommend", json={"history": [50], "k": 5}).json()["items"]
        ]
        assert c.app.state.vitrina["service"].store.history("anna") == ["50"]  # type: ignore[attr-defined]
        if backend == "redis":
            store = c.app.state.vitrina["service"].store  # type: ignore[attr-defined]
            for key in store._redis.scan_iter(f"{store.prefix}:*"):
                store._redis.delete(key)


# ----------------------------------------------------------------------------- crash safety
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(model_dir: Path, port: int, args: list[str]) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "vitrina.serving.cli",
        str(model_dir),
        "--port",
        str(port),
        "--admin-token",
        TOKEN,
    ]
    proc = subprocess.Popen([*cmd, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"service exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("service did not become healthy in 60 s")


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_acknowledged_events_survive_sigkill(backend: str, tmp_path: Path, model_dir: Path) -> None:
    args = ["--state-db", str(tmp_path / "state.sqlite")]
    if backend == "redis":
        args += ["--redis-url", redis_or_skip(), "--redis-prefix", f"test-{uuid.uuid4().hex}"]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(model_dir, port, args)
    acked = []
    try:
        with httpx.Client(base_url=url, timeout=5) as http:
            for i in range(40):
                r = http.post(
                    "/events", json={"events": [{"user_id": "kim", "item_id": 1 + i, "event": "click"}]}
                )
                assert r.status_code == 200
                acked.append(str(1 + i))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proc = _start(model_dir, port, args)
    try:
        hist = httpx.get(
            f"{url}/admin/users/kim/history", headers={"Authorization": f"Bearer {TOKEN}"}
        ).json()
        assert hist["items"] == acked
        r = httpx.post(f"{url}/recommend", json={"user_id": "kim", "k": 10}).json()
        assert not {x["item_id"] for x in r["items"]} & set(range(1, 41))
    finally:
        proc.terminate()
        proc.wait(10)


def _workers(pid: int) -> list[int]:
    """The worker processes uvicorn's supervisor ``pid`` spawned (its resource tracker excluded)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def test_services_sharing_a_folder_follow_each_others_swaps(
    tmp_path: Path, model_dir: Path, ml100k_head: pl.DataFrame
) -> None:
    """Two services on one run folder (two workers' worth): a swap taken by one answers only when
    the other serves the new bundle too, swapped in place by its follower thread."""
    popular = make_model("popular", {}).fit(ml100k_head).save(model_dir.parent / "popular-followed")
    folder = tmp_path / "run"
    folder.mkdir()
    settings = Settings(model_dir=model_dir, state_db=tmp_path / "state.sqlite")
    a, b = Service.from_settings(settings), Service.from_settings(settings)
    try:  # two live process ids stand for the two workers
        a.follow(Fleet(folder, pid=os.getpid()), poll_s=0.02)
        b.follow(Fleet(folder, pid=os.getppid()), poll_s=0.02)
        new, old = a.swap(popular, None)
        assert b.default.version == new != old and b.generation == a.generation == 1
        new, old = b.swap(model_dir, None)
        assert a.default.version == new and old.startswith("popular-followed@") and a.generation == 2
    finally:
        a.close()
        b.close()
    assert not list(folder.glob("worker-*"))  # closed workers are waited for no more


def test_swaps_wait_only_for_live_workers(tmp_path: Path) -> None:
    """A worker file names a pid and its start time: once that process is gone (or its pid belongs
    to another process) nobody waits for it, and its file is removed."""
    fleet = Fleet(tmp_path)
    fleet.caught_up(1)
    assert fleet.behind(1) == [] and fleet.behind(2) == [os.getpid()]
    (tmp_path / f"worker-{os.getpid()}").write_text("1 0")  # this pid, another start: a reused pid
    assert fleet.behind(2) == [] and not list(tmp_path.glob("worker-*"))


def test_metrics_add_up_the_workers_snapshots(tmp_path: Path) -> None:
    """Each worker renders its own counts plus the other's latest snapshot: the same totals."""
    fleets = [Fleet(tmp_path, pid=101), Fleet(tmp_path, pid=102)]
    metrics = [Metrics(peers=f.peer_metrics) for f in fleets]
    metrics[0].observe("POST", "/recommend", 200, 0.003)
    metrics[1].observe("POST", "/recommend", 200, 0.03)
    metrics[1].events("click", 2)
    metrics[0].fallback("unknown_user")
    for fleet, m in zip(fleets, metrics, strict=True):
        fleet.write_metrics(m.snapshot())
    for m in metrics:
        text = m.render()
        assert 'vitrina_requests_total{method="POST",route="/recommend",status="200"} 2' in text
        assert 'vitrina_request_seconds_bucket{route="/recommend",le="0.005"} 1' in text
        assert 'vitrina_request_seconds_bucket{route="/recommend",le="+Inf"} 2' in text
        assert 'vitrina_request_seconds_sum{route="/recommend"} 0.033000' in text
        assert 'vitrina_events_total{event="click"} 2' in text
        assert 'vitrina_fallbacks_total{reason="unknown_user"} 1' in text


def _raw_keep_alive(port: int) -> socket.socket:
    """A connection that has answered one request and stays open (HTTP/1.1 keep-alive)."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    _raw_get(conn, "/health")
    return conn


def _raw_get(conn: socket.socket, path: str) -> int:
    """GET ``path`` on an open connection; the status (the body is read whole, so it can be reused)."""
    conn.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        head += chunk
    head, _, body = head.partition(b"\r\n\r\n")
    length = int(
        next(x for x in head.split(b"\r\n") if x.lower().startswith(b"content-length:")).split(b":")[1]
    )
    while len(body) < length:
        body += conn.recv(65536)
    return int(head.split()[1])


def _requests_total(text: str, route: str) -> int:
    """Sum of ``vitrina_requests_total`` over statuses for ``route`` in a /metrics exposition."""
    rows = [line for line in text.splitlines() if line.startswith("vitrina_requests_total{")]
    return sum(int(line.rsplit(" ", 1)[1]) for line in rows if f'route="{route}"' in line)


def test_two_workers_share_state_and_swap_together(
    tmp_path: Path, model_dir: Path, ml100k_head: pl.DataFrame
) -> None:
    """Two workers: shared histories, one /metrics for both, and hot swaps (default model and a
    variant's) that reach both in place: when the swap answers both serve it, no worker restarted,
    and connections opened before it keep working (a rolling restart closed them)."""
    experiments = tmp_path / "exp.json"
    arms = {"control": 0.5, "b": 0.5}
    spec = {"name": "exp", "layer": "home", "salt": "t", "variants": arms, "models": {"b": str(model_dir)}}
    experiments.write_text(json.dumps({"experiments": [spec]}))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["--state-db", str(tmp_path / "state.sqlite"), "--workers", "2", "--experiments", str(experiments)]
    proc = _start(model_dir, port, args)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        workers = _workers(proc.pid)
        assert len(workers) == 2
        for _ in range(8):  # fresh connections, spread over both workers: each caches kim's history
            assert httpx.get(f"{url}/admin/users/kim/history", headers=auth).json() == {"items": []}
        click = {"events": [{"user_id": "kim", "item_id": 50, "event": "click"}]}
        assert httpx.post(f"{url}/events", json=click).status_code == 200
        for _ in range(8):  # whichever worker answers has seen the other's write
            assert httpx.get(f"{url}/admin/users/kim/history", headers=auth).json() == {"items": ["50"]}
            r = httpx.post(f"{url}/recommend", json={"user_id": "kim", "k": 5})
            assert r.status_code == 200 and r.json()["fallback_reason"] == "unknown_user_history"
        # workers share their counters within about a second (later on a loaded machine): poll until
        # 8 fresh connections, spread over both workers, all report every worker's requests
        deadline = time.monotonic() + 10
        while True:
            scrapes = [httpx.get(f"{url}/metrics").text for _ in range(8)]
            totals = [_requests_total(t, "/recommend") for t in scrapes]
            if totals == [8] * 8 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert totals == [8] * 8
        assert all('vitrina_events_total{event="click"} 1' in t for t in scrapes)
        kept = [_raw_keep_alive(port) for _ in range(6)]
        popular = make_model("popular", {}).fit(ml100k_head).save(model_dir.parent / "popular")
        for variant in (None, "exp/b"):
            body = {"model_dir": str(popular), "variant": variant}
            swap = httpx.post(f"{url}/admin/model", json=body, headers=auth, timeout=60)
            assert swap.status_code == 200
            new = swap.json()["model_version"]
            assert new.startswith("popular@")
            for _ in range(10):  # answered: both workers serve it already
                health = httpx.get(f"{url}/health").json()
                assert (health["model_version"] if variant is None else health["variants"][variant]) == new
        assert _workers(proc.pid) == workers  # swapped in place: no worker was replaced
        assert [_raw_get(conn, "/health") for conn in kept] == [200] * 6
        for conn in kept:
            conn.close()
    finally:
        proc.terminate()
        proc.wait(30)


# ----------------------------------------------------------------------------- calibration
def test_isotonic_matches_sklearn_and_is_monotone() -> None:
    rng = np.random.default_rng(1)
    s = rng.normal(size=2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-2 * s))).astype(float)
    cal = fit_calibrator(s, y, "isotonic")
    grid = np.linspace(-4, 4, 101)
    p = cal(grid)
    assert np.all(np.diff(p) >= -1e-7) and p.min() >= 0 and p.max() <= 1
    sklearn = pytest.importorskip("sklearn.isotonic")
    ref = sklearn.IsotonicRegression(out_of_bounds="clip").fit(s, y)
    np.testing.assert_allclose(cal(s), ref.predict(s), atol=1e-6)


def test_platt_recovers_parameters() -> None:
    rng = np.random.default_rng(2)
    s = rng.normal(size=20_000)
    y = (rng.random(len(s)) < 1 / (1 + np.exp(-(1.5 * s - 0.5)))).astype(float)
    cal = fit_calibrator(s, y, "platt")
    assert cal.a == pytest.approx(1.5, abs=0.1) and cal.b == pytest.approx(-0.5, abs=0.1)  # type: ignore[union-attr]


def test_expected_value_round_trip(tmp_path: Path) -> None:
    log = pl.DataFrame({"score": [0.1, 0.2, 0.8, 0.9], "engaged": [0, 0, 1, 1], "continued": [1, 1, 0, 1]})
    ev = ExpectedValueModel.fit(log, "isotonic")
    ev.save(tmp_path / "c.json")
    again = ExpectedValueModel.load(tmp_path / "c.json")
    # engage: 0, 0, 1, 1 is already monotone; continue: 1, 1, 0, 1 pools the first three to 2/3
    # so at score 0.8: P(engage) = 1, value 3, P(continue) = 2/3 -> 2.0; at 0.9: 1 x 3 x 1 = 3.0
    assert again(np.array([0.8, 0.9]), np.array([3.0, 3.0])).tolist() == pytest.approx([2.0, 3.0])
    with pytest.raises(DataValidationError, match="outcomes 0 or 1"):
        fit_calibrator(np.array([0.1]), np.array([2.0]))


# ----------------------------------------------------------------------------- ANN and catalogue
def test_ann_recall_and_masks() -> None:
    rng = np.random.default_rng(3)
    items = rng.normal(size=(30_000, 16)).astype(np.float32)
    index = AnnIndex(items, exact_below=1000)
    hits = 0
    for q in rng.normal(size=(20, 16)).astype(np.float32):
        exact, _ = index.exact(q, 50)
        approx, scores = index.search(q, 50)
        hits += len(set(exact) & set(approx))
        np.testing.assert_allclose(scores, items[approx] @ q, rtol=1e-5)
    assert hits / (20 * 50) > 0.9
    allowed = np.zeros(len(items), dtype=bool)
    allowed[::2] = True  # above exact_below: ANN with oversampling, mask before the cut
    idx, _ = index.search(rng.normal(size=16), 50, allowed)
    assert np.all(allowed[idx[idx >= 0]])
    few = np.zeros(len(items), dtype=bool)
    few[:7] = True  # below exact_below: exact over the allowed items only
    idx, _ = index.search(rng.normal(size=16), 10, few)
    assert sorted(idx[:7]) == list(range(7)) and list(idx[7:]) == [-1, -1, -1]


def test_catalogue_validation(tmp_path: Path) -> None:
    bad = tmp_path / "c.csv"
    bad.write_text("item_id,value\n1,2\n1,3\n")
    with pytest.raises(DataValidationError, match="unique"):
        Catalog.read(bad)
    bad.write_text("item,value\n1,2\n")
    with pytest.raises(DataValidationError, match="missing column 'item_id'"):
        Catalog.read(bad)
    bad.write_text("item_id,value\n1,-2\n")
    with pytest.raises(DataValidationError, match="value"):
        Catalog.read(bad)


def test_worker_configuration_travels_as_json_and_round_trips() -> None:
    """--workers hands each worker its settings through the environment as JSON (no pickle):
    every field, paths and the exploration policy included, comes back equal."""
    from vitrina.serving.schemas import Exploration
    from vitrina.serving.settings import Settings
    from vitrina.serving.workers import WorkerConfig, decode, encode

    settings = Settings(
        model_dir=Path("/models/a"),
        catalog=Path("/data/catalog.csv"),
        state_db=Path("/state/s.sqlite"),
        redis_url="redis://127.0.0.1:6379/0",
        sqlite_sync="normal",
        admin_token="t0k",
        model_root=Path("/models"),
        exploration=Exploration.parse("softmax:0.5"),
        retention_days=7.5,
    )
    config = WorkerConfig(
        settings, torch_threads=1, background_load=True, folder=Path("/tmp/vitrina-serve-x")
    )
    text = encode(config)
    assert decode(text) == config
    assert "pickle" not in text and text.startswith("{")
