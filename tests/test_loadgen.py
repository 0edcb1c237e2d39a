"""The open-loop load generator (benchmarks/loadgen.py): its schedule and what it charges to latency.

Nothing here asserts on speed; the stall test only uses lower bounds that a slow machine keeps.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("loadgen", REPO / "benchmarks" / "loadgen.py")
assert _spec is not None and _spec.loader is not None
loadgen = importlib.util.module_from_spec(_spec)
sys.modules["loadgen"] = loadgen
_spec.loader.exec_module(loadgen)


def test_constant_schedule_is_evenly_spaced_and_bounded() -> None:
    rng = np.random.default_rng(0)
    t = loadgen.arrival_times(200.0, 2.0, 10_000, "constant", rng)
    assert len(t) == 400 and t[0] == 0.0
    np.testing.assert_allclose(np.diff(t), 1 / 200)
    assert len(loadgen.arrival_times(200.0, 2.0, 50, "constant", rng)) == 50  # count cap
    with pytest.raises(ValueError):
        loadgen.arrival_times(0.0, 2.0, 50, "constant", rng)


def test_poisson_schedule_has_the_offered_rate_and_exponential_gaps() -> None:
    t = loadgen.arrival_times(500.0, 20.0, 1_000_000, "poisson", np.random.default_rng(1))
    assert np.all(np.diff(t) > 0) and t[-1] < 20.0
    assert abs(len(t) / 20.0 - 500) < 4 * math.sqrt(500 * 20) / 20  # within 4 sigma of the rate
    gaps = np.diff(t)
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.05  # exponential: coefficient of variation 1


def test_latency_counts_from_the_schedule_not_from_the_send() -> None:
    """A server that handles one request at a time, 20 ms each, offered one every 5 ms.

    A closed-loop client would report 20 ms for every request. Open loop, request i cannot finish
    before (i + 1) x 20 ms after the start, so its latency from its scheduled time i x 5 ms is at
    least 20 + 15 i ms: the queue behind the stall is charged to the server.
    """
    server = asyncio.Lock()

    async def send(i: int) -> int:
        async with server:
            await asyncio.sleep(0.02)
        return 503 if i == 3 else 200

    schedule = loadgen.arrival_times(200.0, 0.05, 100, "constant", np.random.default_rng(0))
    latency, lag, outcome, _ = asyncio.run(loadgen.run_schedule(schedule, send, timeout_s=10.0))
    assert len(latency) == 10
    for i in range(10):
        if i != 3:
            assert latency[i] >= 0.020 + 0.015 * i - 1e-3, (i, latency[i])
    assert outcome[3] == "http 503" and math.isinf(latency[3])
    assert outcome.count("ok") == 9 and np.all(lag >= 0)


def test_timeouts_are_errors_with_infinite_latency() -> None:
    async def send(i: int) -> int:
        await asyncio.sleep(10.0 if i == 0 else 0.0)
        return 200

    schedule = np.array([0.0, 0.001])
    latency, _, outcome, _ = asyncio.run(loadgen.run_schedule(schedule, send, timeout_s=0.05))
    assert outcome == ["timeout", "ok"] and math.isinf(latency[0]) and np.isfinite(latency[1])
    p50, _, p99, _, worst = loadgen.percentiles_ms(latency)
    assert np.isfinite(p50) and math.isinf(p99) and math.isinf(worst)


def test_percentiles_nearest_rank() -> None:
    lat = np.arange(1, 1001) / 1000.0  # 1..1000 ms
    p50, p90, p99, p999, worst = loadgen.percentiles_ms(lat)
    assert (p50, p90, p99, p999, worst) == pytest.approx((500.0, 900.0, 990.0, 999.0, 1000.0))


def test_bodies_come_from_real_histories_and_the_mix() -> None:
    df = pl.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2, 3],
            "item_id": [10, 11, 12, 10, 13, 14],
            "timestamp": [3, 1, 2, 5, 6, 4],
        }
    )
    w = loadgen.Workload.from_events(df)
    assert dict(zip(w.users, w.histories, strict=True)) == {1: [11, 12, 10], 2: [10, 13], 3: [14]}
    assert w.items[0] == 10  # the most popular item first
    rng = np.random.default_rng(0)
    for _ in range(50):
        path, body = w.body("history-filter", rng)
        assert path == "/recommend" and body["k"] == 10
        hist = body["history"]
        assert any(h[len(h) - len(hist) :] == hist for h in w.histories)  # a real user's recent items
        assert len(set(body["filters"]["deny_items"])) == 3
    paths = [w.body("mixed", rng)[0] for _ in range(400)]
    assert 20 < paths.count("/slate") < 100  # 15% of the mix
    raw = loadgen.http_request(*w.body("history-filter", rng), "127.0.0.1")
    head, _, data = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /recommend HTTP/1.1") and f"content-length: {len(data)}".encode() in head
    assert json.loads(data)["k"] == 10


def test_only_loopback_targets() -> None:
    assert loadgen.loopback("localhost").startswith("127.")
    with pytest.raises(SystemExit, match="loopback"):
        loadgen.loopback("8.8.8.8")
