"""Exploration in /recommend: propensities per slot, filters first, logged rows, and OPE from the logs."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from test_serving_state import redis_or_skip
from vitrina.experiments import ope
from vitrina.experiments.schema import EXPOSURE, ITEM_ID, PROPENSITY, REQUEST_ID, validate_events
from vitrina.models.registry import make_model
from vitrina.serving.app import create_app
from vitrina.serving.ranking import explore
from vitrina.serving.schemas import Exploration
from vitrina.serving.service import EXPLORATION_EXPERIMENT, Service, Settings
from vitrina.serving.stores import EventStore, LogRow, RedisStore, SQLiteStore


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, ml100k_head: pl.DataFrame) -> Path:
    return make_model("popular").fit(ml100k_head).save(tmp_path_factory.mktemp("m") / "popular")


class OneArm:
    """Users whose id starts with ``x`` are in experiment ``ranker``, variant ``a``."""

    def assign(self, unit_id: str) -> dict[str, str]:
        return {"ranker": "a"} if unit_id.startswith("x") else {}


def _settings(tmp_path: Path, model_dir: Path, backend: str, exploration: str = "off") -> Settings:
    extra = (
        {"redis_url": redis_or_skip(), "redis_prefix": f"test-{uuid.uuid4().hex}"}
        if backend == "redis"
        else {}
    )
    return Settings(
        model_dir=model_dir,
        state_db=tmp_path / "s.db",
        exploration=Exploration.parse(exploration),
        **extra,  # type: ignore[arg-type]
    )


def _reopen(settings: Settings) -> EventStore:
    if settings.redis_url:
        return RedisStore(settings.redis_url, prefix=settings.redis_prefix)
    return SQLiteStore(settings.state_db)


def _rows(settings: Settings) -> list[LogRow]:
    """The whole log, read after the service flushed and closed it (Redis keys are removed)."""
    store = _reopen(settings)
    rows: list[LogRow] = store.rows()  # type: ignore[attr-defined]
    if isinstance(store, RedisStore):
        for key in store._redis.scan_iter(f"{store.prefix}:*"):
            store._redis.delete(key)
    store.close()
    return rows


@pytest.fixture
def client(tmp_path: Path, model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(tmp_path, model_dir, "sqlite"))) as c:
        yield c


# ----------------------------------------------------------------------------- the draw itself
@pytest.mark.parametrize("spec", ["epsilon:0.3", "softmax:2.0"])
def test_propensities_sum_to_one_per_slot_and_match_frequencies(spec: str) -> None:
    scores = np.array([3.0, -np.inf, 2.0, 1.0, 0.5, -np.inf, 0.1], dtype=np.float32)
    eligible = {0, 2, 3, 4, 6}
    first: dict[int, set[float]] = defaultdict(set)
    second: dict[int, dict[int, set[float]]] = defaultdict(lambda: defaultdict(set))
    counts: Counter[int] = Counter()
    n = 2000
    for seed in range(n):
        idx, val, prop = explore(scores, 2, Exploration.parse(spec), np.random.default_rng(seed))
        assert set(idx.tolist()) <= eligible and len(set(idx.tolist())) == 2
        assert np.all((prop > 0) & (prop <= 1)) and np.array_equal(val, scores[idx])
        first[int(idx[0])].add(float(prop[0]))
        second[int(idx[0])][int(idx[1])].add(float(prop[1]))
        counts[int(idx[0])] += 1
    assert set(first) == eligible and all(len(p) == 1 for p in first.values())
    p0 = {i: next(iter(p)) for i, p in first.items()}
    assert sum(p0.values()) == pytest.approx(1.0)
    for i, p in p0.items():  # the logged propensity is the real frequency of the item at slot 0
        assert counts[i] / n == pytest.approx(p, abs=0.04)
    for top, rest in second.items():  # slot 2, given slot 1: over the 4 items left
        assert set(rest) == eligible - {top}
        assert sum(next(iter(p)) for p in rest.values()) == pytest.approx(1.0)
    if spec.startswith("epsilon"):
        assert p0[0] == pytest.approx(0.7 + 0.3 / 5) and p0[6] == pytest.approx(0.3 / 5)


def test_explore_refuses_off_and_stops_at_the_eligible_count() -> None:
    scores = np.array([1.0, -np.inf, 0.5], dtype=np.float32)
    with pytest.raises(ValueError, match="top_k"):
        explore(scores, 2, Exploration(), np.random.default_rng(0))
    idx, _, prop = explore(scores, 5, Exploration.parse("epsilon:0.5"), np.random.default_rng(0))
    assert sorted(idx.tolist()) == [0, 2] and prop[1] == 1.0


# ----------------------------------------------------------------------------- /recommend
def test_recommend_explores_after_filters(client: TestClient) -> None:
    allow = [c["item_id"] for c in client.post("/recommend", json={"user_id": "z", "k": 6}).json()["items"]]
    filters = {"allow_items": allow, "deny_items": [allow[0], allow[3]]}
    body = {"user_id": "z", "k": 4, "filters": filters, "exploration": "epsilon:1.0"}
    seen = set()
    for _ in range(30):
        resp = client.post("/recommend", json=body).json()
        got = [x["item_id"] for x in resp["items"]]
        assert set(got) == set(allow) - {allow[0], allow[3]}  # denied items never appear
        assert [x["position"] for x in resp["items"]] == [0, 1, 2, 3]
        assert [x["propensity"] for x in resp["items"]] == pytest.approx([1 / 4, 1 / 3, 1 / 2, 1.0])
        assert resp["exploration"] == "epsilon:1" and resp["n_eligible"] == 4
        seen.add(tuple(got))
    assert len(seen) > 1  # no seed: random
    seeded = [
        client.post("/recommend", json={**body, "exploration_seed": 7}).json()["items"] for _ in range(3)
    ]
    assert seeded[0] == seeded[1] == seeded[2]


def test_exploration_default_and_override(tmp_path: Path, model_dir: Path) -> None:
    with TestClient(create_app(_settings(tmp_path, model_dir, "sqlite", "softmax:0.5"))) as c:
        explored = c.post("/recommend", json={"user_id": "z", "k": 3}).json()
        assert explored["exploration"] == "softmax:0.5"
        assert all(0 < x["propensity"] <= 1 for x in explored["items"])
        plain = c.post("/recommend", json={"user_id": "z", "k": 3, "exploration": "off"}).json()
        assert plain["exploration"] == "off" and all(x["propensity"] is None for x in plain["items"])
        bad = c.post("/recommend", json={"user_id": "z", "exploration": "epsilon:2"})
        assert bad.status_code == 422 and "epsilon:E" in bad.json()["detail"]


# ----------------------------------------------------------------------------- logged rows
@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_exposures_log_item_position_and_propensity(backend: str, tmp_path: Path, model_dir: Path) -> None:
    settings = _settings(tmp_path, model_dir, backend, "epsilon:0.2")
    build = lambda s: Service.from_settings(s, assigner=OneArm())  # noqa: E731
    with TestClient(create_app(settings, build=build)) as c:
        served = {u: c.post("/recommend", json={"user_id": u, "k": 3}).json() for u in ("x1", "y1")}
        plain = c.post("/recommend", json={"user_id": "x2", "k": 3, "exploration": "off"}).json()
    rows = _rows(settings)
    assert len(rows) == 3 + 3 + 1
    for user, resp in served.items():
        logged = [r for r in rows if r.request_id == resp["request_id"]]
        experiment, variant = ("ranker", "a") if user == "x1" else (EXPLORATION_EXPERIMENT, "epsilon:0.2")
        assert [(r.unit_id, r.event, r.experiment, r.variant) for r in logged] == [
            (user, EXPOSURE, experiment, variant)
        ] * 3
        assert [(r.item_id, r.position, r.propensity) for r in logged] == [
            (str(x["item_id"]), x["position"], x["propensity"]) for x in resp["items"]
        ]
    (row,) = [r for r in rows if r.request_id == plain["request_id"]]  # no exploration: one row, as before
    assert (row.experiment, row.item_id, row.propensity, row.position) == ("ranker", None, None, None)
    validate_events(pl.DataFrame([r.__dict__ for r in rows]), source=backend)


# ----------------------------------------------------------------------------- OPE from the service's logs
def test_ope_of_a_new_policy_from_epsilon_greedy_logs(tmp_path: Path, model_dir: Path) -> None:
    settings = _settings(tmp_path, model_dir, "sqlite", "epsilon:0.4")
    with TestClient(create_app(settings)) as c:
        body = {"user_id": "z", "k": 5, "exploration": "off"}
        ranked = [x["item_id"] for x in c.post("/recommend", json=body).json()["items"]]
        click_prob = dict(zip(ranked, [0.05, 0.2, 0.3, 0.5, 0.7], strict=True))  # the top item is bad
        target = dict(zip(ranked, [0.05, 0.1, 0.15, 0.3, 0.4], strict=True))  # the policy to evaluate
        rng = np.random.default_rng(1)
        clicks = []
        for i in range(1500):
            req = {"user_id": f"u{i}", "k": 1, "filters": {"allow_items": ranked}, "exploration_seed": i}
            resp = c.post("/recommend", json=req).json()
            item = resp["items"][0]["item_id"]
            if rng.random() < click_prob[item]:
                clicks.append(
                    {
                        "user_id": f"u{i}",
                        "event": "click",
                        "value": 1.0,
                        "item_id": item,
                        "request_id": resp["request_id"],
                        "experiment": EXPLORATION_EXPERIMENT,
                        "variant": "epsilon:0.4",
                    }
                )
        assert c.post("/events", json={"events": clicks}).status_code == 200
    log = validate_events(pl.DataFrame([r.__dict__ for r in _rows(settings)]), source="service log")
    exposures = log.filter(pl.col("event") == EXPOSURE, pl.col("position") == 0)
    reward = log.filter(pl.col("event") == "click").select(REQUEST_ID, ITEM_ID, reward=pl.lit(1.0))
    data = exposures.join(reward, on=[REQUEST_ID, ITEM_ID], how="left").with_columns(
        pl.col("reward").fill_null(0.0)
    )
    assert data.height == 1500  # the unexplored ranking request above logs no exposure
    pi_new = [target[int(i)] for i in data[ITEM_ID]]
    truth = sum(target[i] * click_prob[i] for i in ranked)
    for estimator in (ope.ips, ope.snips):
        est = estimator(pi_new, data[PROPENSITY], data["reward"])
        assert est.ci_low <= truth <= est.ci_high, (estimator.__name__, est, truth)
        assert est.ci_high - est.ci_low < 0.25
    logged_value = float(data["reward"].mean())  # type: ignore[arg-type]
    assert not est.ci_low <= logged_value <= est.ci_high  # the logging policy's own value is far off
