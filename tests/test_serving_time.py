"""Event times through the service (issue 10): /recommend and /slate take per-item history times,
/events keep theirs in the online history, and time-aware models (hstu) score with them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vitrina.models.base import Recommender, load_model
from vitrina.models.registry import make_model
from vitrina.serving.app import create_app
from vitrina.serving.schemas import EARLIEST, LATEST, RecommendRequest
from vitrina.serving.service import Service
from vitrina.serving.settings import Settings
from vitrina.serving.stores import EventStore, LogRow, SQLiteStore

pytestmark = pytest.mark.usefixtures("one_thread")

T0 = 1_300_000_000  # March 2011
DAY = 86_400
ALL = 25  # items in the log: k = ALL returns every item's score


def _timed_log(n_users: int = 60, seed: int = 0) -> pl.DataFrame:
    """Users with 8 events each over 25 items, minutes to days apart."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        t = T0 + int(rng.integers(10**6))
        for _ in range(8):
            t += int(rng.integers(1, 10**5))
            rows.append((u, int(rng.integers(ALL)), t))
    return pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("timed")
    params = {"n_factors": 8, "max_len": 10, "n_negatives": 8, "epochs": 2, "verbose": False}
    return {
        "hstu": make_model("hstu", params).fit(_timed_log()).save(root / "hstu"),
        "ease": make_model("ease", {"l2": 10.0}).fit(_timed_log()).save(root / "ease"),
    }


@pytest.fixture(scope="module")
def hstu(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> Iterator[TestClient]:
    state = tmp_path_factory.mktemp("hstu-state") / "s.db"
    with TestClient(create_app(Settings(model_dir=models["hstu"], state_db=state))) as c:
        yield c


def _scores(r: object) -> dict[object, float]:
    body = r.json()  # type: ignore[attr-defined]
    assert r.status_code == 200, body  # type: ignore[attr-defined]
    return {x["item_id"]: x["score"] for x in body["items"]}


def _ask(client: TestClient, **body: object) -> dict[object, float]:
    return _scores(client.post("/recommend", json={"k": ALL, "filters": {"exclude_seen": False}, **body}))


def _python(model: Recommender, items: list[int], times: list[int]) -> dict[object, float]:
    frame = model.recommend_for_history(items, k=ALL, exclude_seen=False, timestamps=times)
    return dict(zip(frame["item_id"].to_list(), frame["score"].to_list(), strict=True))


HISTORY = [3, 7, 11, 2]
CLOSE = [T0, T0 + 60, T0 + 120, T0 + 180]
APART = [T0, T0 + 30 * DAY, T0 + 60 * DAY, T0 + 90 * DAY]


def test_history_times_change_hstu_scores_through_the_service(
    hstu: TestClient, models: dict[str, Path]
) -> None:
    close = _ask(hstu, history=HISTORY, history_timestamps=CLOSE)
    apart = _ask(hstu, history=HISTORY, history_timestamps=APART)
    assert close == _ask(hstu, history=HISTORY, history_timestamps=CLOSE)  # deterministic
    assert close != apart  # only the times differ
    model = load_model(models["hstu"])
    for got, times in ((close, CLOSE), (apart, APART)):  # the service scores as the Python API does
        want = _python(model, HISTORY, times)
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[i] for i in want], list(want.values()), rtol=1e-5, atol=1e-6)


def test_slate_takes_history_times(hstu: TestClient) -> None:
    def top(times: list[int]) -> list[float]:
        body = {"history": HISTORY, "history_timestamps": times, "k": 5, "carousels": [{"name": "all"}]}
        r = hstu.post("/slate", json=body)
        assert r.status_code == 200, r.text
        return [x["score"] for x in r.json()["carousels"][0]["items"]]

    assert top(CLOSE) != top(APART)


def test_posted_events_keep_their_times_for_time_models(hstu: TestClient, models: dict[str, Path]) -> None:
    """Two new users post the same items at different times: the logged times reach hstu."""
    got = {}
    for times in (CLOSE, APART):
        user = f"new-{uuid.uuid4().hex}"
        events = [
            {"user_id": user, "event": "click", "item_id": i, "timestamp": t}
            for i, t in zip(HISTORY, times, strict=True)
        ]
        assert hstu.post("/events", json={"events": events}).status_code == 200
        got[tuple(times)] = _ask(hstu, user_id=user)
    assert got[tuple(CLOSE)] != got[tuple(APART)]
    want = _python(load_model(models["hstu"]), HISTORY, APART)
    np.testing.assert_allclose(
        [got[tuple(APART)][i] for i in want], list(want.values()), rtol=1e-5, atol=1e-6
    )


def test_given_items_without_times_count_as_the_request_time(hstu: TestClient) -> None:
    """A known user's trained events keep their saved times; triggers given without times are
    taken as happening at the request time (``request_time``, else the server's clock)."""
    at = T0 + 400 * DAY
    explicit = _ask(hstu, user_id=0, history=[3], history_timestamps=[at])
    assert _ask(hstu, user_id=0, history=[3], request_time=at) == explicit
    assert _ask(hstu, user_id=0, history=[3], request_time=at + 300 * DAY) != explicit


def test_batched_time_requests_match_single_ones(tmp_path: Path, models: dict[str, Path]) -> None:
    """Concurrent requests share one model call (issue 16): each keeps its own times and lengths."""
    bodies = [
        {"history": HISTORY, "history_timestamps": CLOSE},
        {"history": HISTORY, "history_timestamps": APART},
        {"history": [5], "history_timestamps": [T0]},
        {"user_id": 3, "history": [1, 2], "request_time": T0 + 500 * DAY},
        {"user_id": 4},
    ]
    reqs = [RecommendRequest.model_validate({"k": 5, **b}) for b in bodies]
    service = Service.from_settings(Settings(model_dir=models["hstu"], state_db=tmp_path / "s.db"))

    async def together() -> list[object]:
        return list(await asyncio.gather(*(service.recommend(r) for r in reqs)))

    try:
        alone = [asyncio.run(service.recommend(r)) for r in reqs]
        joint = asyncio.run(together())
    finally:
        service.close()
    for a, t in zip(alone, joint, strict=True):
        np.testing.assert_allclose(
            [i.score for i in a.items], [i.score for i in t.items], rtol=1e-5, atol=1e-6
        )  # type: ignore[attr-defined]
    assert [i.score for i in alone[0].items] != [i.score for i in alone[1].items]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"history_timestamps": CLOSE[:3]}, "history_timestamps: 3 values for 4 history items"),
        ({"history_timestamps": [T0, T0 + 5, T0 + 1, T0 + 9]}, "history_timestamps must be non-decreasing"),
        ({"history_timestamps": [T0, T0, T0, LATEST + 1]}, "history_timestamps.3"),
        ({"history_timestamps": [T0, T0, T0, EARLIEST - 1]}, "history_timestamps.3"),
        ({"history_timestamps": [T0, T0, T0, "1300000000"]}, "history_timestamps.3"),
        ({"history_timestamps": [T0, T0, T0, True]}, "history_timestamps.3"),
        ({"history_timestamps": [T0, T0, T0, None]}, "history_timestamps.3"),
        ({"history_timestamps": CLOSE, "request_time": T0}, "request_time 1300000000 is before the last"),
        ({"request_time": 1e300}, "request_time"),
    ],
)
@pytest.mark.parametrize("path", ["/recommend", "/slate"])
def test_bad_times_are_422_naming_the_field(hstu: TestClient, path: str, body: dict, needle: str) -> None:
    extra = {"carousels": [{"name": "a"}]} if path == "/slate" else {}
    r = hstu.post(path, json={"history": HISTORY, **body, **extra})
    assert r.status_code == 422 and needle in r.json()["detail"], r.text


def test_a_check_across_fields_is_its_message_alone(hstu: TestClient) -> None:
    r = hstu.post("/recommend", json={"history": HISTORY, "history_timestamps": CLOSE[:3]})
    assert r.json()["detail"] == "history_timestamps: 3 values for 4 history items; give one each"


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_history_times_are_422(hstu: TestClient, raw: str) -> None:
    body = '{"history": [3, 7], "history_timestamps": [1300000000, ' + raw + "]}"
    r = hstu.post("/recommend", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "history_timestamps.1" in r.json()["detail"], r.text


def test_ann_queries_read_the_history_times(
    hstu: TestClient, tmp_path: Path, models: dict[str, Path]
) -> None:
    """With --ann the history's query vector is built with its times, as in exact scoring."""
    settings = Settings(model_dir=models["hstu"], state_db=tmp_path / "s.db", ann=True)
    with TestClient(create_app(settings)) as ann:
        for times in (CLOSE, APART):
            body = {"history": HISTORY, "history_timestamps": times, "k": 5}
            got = _scores(ann.post("/recommend", json=body))
            exact = _scores(hstu.post("/recommend", json=body))
            assert list(got) == list(exact)
            np.testing.assert_allclose(list(got.values()), list(exact.values()), rtol=1e-5, atol=1e-6)


def test_models_without_time_accept_and_ignore_times(tmp_path: Path, models: dict[str, Path]) -> None:
    with TestClient(create_app(Settings(model_dir=models["ease"], state_db=tmp_path / "s.db"))) as c:
        assert _ask(c, history=HISTORY, history_timestamps=APART) == _ask(c, history=HISTORY)


# ----------------------------------------------------------------------------- stores keep the times
@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    from test_serving_state import open_store

    with open_store(request.param, tmp_path, max_history=3) as s:
        yield s


def test_stores_return_each_history_item_with_its_time(store: EventStore) -> None:
    assert store.timed_history("u") == ([], [])
    store.append([LogRow(10.0 + i, "u", "click", item_id=str(i)) for i in range(4)])
    store.append([LogRow(50.0, "u", "exposure", "exp", "a", 1.0, item_id="9")])
    assert store.timed_history("u") == (["1", "2", "3"], [11.0, 12.0, 13.0])  # trimmed like history
    store.append([LogRow(20.5, "u", "click", item_id="4")])  # arrival order, times as given
    assert store.timed_history("u") == (["2", "3", "4"], [12.0, 13.0, 20.5])
    assert store.history("u") == ["2", "3", "4"]


def test_sqlite_times_survive_a_restart(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "s.db").append([LogRow(7.5, "u", "click", item_id="1")])
    assert SQLiteStore(tmp_path / "s.db").timed_history("u") == (["1"], [7.5])


times = st.one_of(
    st.integers(EARLIEST - 10, LATEST + 10),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([T0, None, True, "1300000000", [], {}]),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    history=st.lists(st.integers(-1, ALL + 2) | st.sampled_from(["3", "x"]), max_size=6),
    stamps=st.none() | st.lists(times, max_size=7),
    request_time=st.none() | times,
    user=st.none() | st.sampled_from([0, 5, "someone-new"]),
)
def test_fuzz_time_fields_never_5xx(
    hstu: TestClient, history: list[object], stamps: list[object] | None, request_time: object, user: object
) -> None:
    """Any history, times and request time against a model that reads them: 2xx or a 4xx message."""
    body = {"user_id": user, "history": history, "history_timestamps": stamps, "request_time": request_time}
    raw = json.dumps({k: v for k, v in body.items() if v is not None})  # NaN/Infinity as Python writes them
    r = hstu.post("/recommend", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code < 500, r.text
    assert r.status_code < 300 or isinstance(r.json()["detail"], str)
