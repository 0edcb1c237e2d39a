"""Issue 12, HTTP service inputs: strict and bounded numbers, catalogue ranges, content type, fuzzing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vitrina.errors import DataValidationError
from vitrina.models.registry import make_model
from vitrina.serving.app import create_app
from vitrina.serving.catalog import Catalog
from vitrina.serving.schemas import EARLIEST, LATEST, MAX_DISTANCE_PENALTY
from vitrina.serving.service import Settings

HERE = {"lat": 52.5, "lon": 13.4}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, ml100k_head: pl.DataFrame) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    items = ml100k_head["item_id"].unique().sort().to_list()
    rng = np.random.default_rng(0)
    pl.DataFrame(
        {
            "item_id": items,
            "category": [["drama", "comedy"][i % 2] for i in items],
            "lat": rng.uniform(52.0, 53.0, len(items)),
            "lon": rng.uniform(13.0, 14.0, len(items)),
            "value": [1.0 + (i % 3) for i in items],
        }
    ).write_parquet(root / "catalog.parquet")
    return {
        "model": make_model("popular").fit(ml100k_head).save(root / "popular"),
        "ease": make_model("ease", {"l2": 100.0}).fit(ml100k_head).save(root / "ease"),
        "catalog": root / "catalog.parquet",
    }


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, bundle: dict[str, Path]) -> Iterator[TestClient]:
    state = tmp_path_factory.mktemp("state") / "state.sqlite"
    settings_ = Settings(model_dir=bundle["model"], state_db=state, catalog=bundle["catalog"])
    with TestClient(create_app(settings_)) as c:
        yield c


@pytest.fixture(scope="module")
def ease_client(tmp_path_factory: pytest.TempPathFactory, bundle: dict[str, Path]) -> Iterator[TestClient]:
    """A model with item-item scores, so /similar and /slate reach ranking, not only validation."""
    state = tmp_path_factory.mktemp("ease-state") / "state.sqlite"
    settings_ = Settings(model_dir=bundle["ease"], state_db=state, catalog=bundle["catalog"])
    with TestClient(create_app(settings_)) as c:
        yield c


def _location(**kw: object) -> dict:
    return {"user_id": 1, "k": 5, "filters": {"location": {**HERE, **kw}}}


# ----------------------------------------------------------------------------- strict numbers
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("distance_penalty", "52.5"),
        ("distance_penalty", True),
        ("distance_penalty", -1),
        ("distance_penalty", MAX_DISTANCE_PENALTY * 10),
        ("lat", "52.5"),
        ("lon", False),
        ("max_distance_km", "10"),
    ],
)
def test_location_numbers_are_strict_and_bounded(client: TestClient, field: str, value: object) -> None:
    r = client.post("/recommend", json=_location(**{field: value}))
    assert r.status_code == 422 and field in r.json()["detail"], r.text


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_refused(client: TestClient, raw: str) -> None:
    """Python's json module reads NaN/Infinity (and 1e400 as inf): none of them is a distance."""
    body = '{"user_id": 1, "filters": {"location": {"lat": 52.5, "lon": 13.4, "distance_penalty": ' + raw
    r = client.post("/recommend", content=body + "}}}", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "distance_penalty" in r.json()["detail"], r.text


def test_integers_are_accepted_for_floats(client: TestClient) -> None:
    r = client.post("/recommend", json=_location(lat=52, lon=13, distance_penalty=MAX_DISTANCE_PENALTY))
    assert r.status_code == 200, r.text
    assert all(item["distance_km"] is not None for item in r.json()["items"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"exclude_seen": "false"}, "exclude_seen"),
        ({"exclude_seen": 0}, "exclude_seen"),
    ],
)
def test_bools_are_strict(client: TestClient, body: dict, field: str) -> None:
    r = client.post("/recommend", json={"user_id": 1, "filters": body})
    assert r.status_code == 422 and field in r.json()["detail"], r.text


@pytest.mark.parametrize(
    "exploration", [{"policy": "softmax", "temperature": "2"}, {"policy": "epsilon", "epsilon": True}]
)
def test_exploration_numbers_are_strict(client: TestClient, exploration: dict) -> None:
    r = client.post("/recommend", json={"user_id": 1, "exploration": exploration})
    assert r.status_code == 422 and "exploration" in r.json()["detail"], r.text


@pytest.mark.parametrize("timestamp", [-1e300, 0, EARLIEST - 1, LATEST + 1, 1e300, "1700000000", True])
def test_event_timestamps_are_numbers_in_a_sane_range(client: TestClient, timestamp: object) -> None:
    r = client.post("/events", json={"events": [{"user_id": "u", "event": "click", "timestamp": timestamp}]})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "timestamp" in detail
    if isinstance(timestamp, float | int) and not isinstance(timestamp, bool):
        assert f"[{EARLIEST}, {LATEST}]" in detail


def test_event_timestamps_and_values_in_range_are_stored(client: TestClient) -> None:
    events = [
        {"user_id": "t", "event": "purchase", "item_id": 1, "timestamp": EARLIEST, "value": 3},
        {"user_id": "t", "event": "click", "item_id": 2, "timestamp": 1_700_000_000.5},
    ]
    r = client.post("/events", json={"events": events})
    assert r.status_code == 200 and r.json()["accepted"] == 2, r.text


@pytest.mark.parametrize("value", ["NaN", "Infinity", '"3"', "true"])
def test_event_values_are_finite_numbers(client: TestClient, value: str) -> None:
    body = '{"events": [{"user_id": "u", "event": "purchase", "value": ' + value + "}]}"
    r = client.post("/events", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "value" in r.json()["detail"], r.text


# ----------------------------------------------------------------------------- catalogue rows
@pytest.mark.parametrize(
    ("rows", "where"),
    [
        ("1,52.5,13.4\n2,200,13.4\n", "row 2 (item_id 2), column 'lat'"),
        ("1,52.5,13.4\n2,-90.5,13.4\n", "row 2 (item_id 2), column 'lat'"),
        ("1,52.5,181\n", "row 1 (item_id 1), column 'lon'"),
        ("1,52.5,13.4\n2,nan,13.4\n", "row 2 (item_id 2), column 'lat'"),
        ("1,52.5,inf\n", "row 1 (item_id 1), column 'lon'"),
        ("1,52.5,13.4\n2,north,13.4\n", "row 2 (item_id 2), column 'lat': not a number: 'north'"),
    ],
)
def test_catalogue_coordinates_are_checked_at_load(tmp_path: Path, rows: str, where: str) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text("item_id,lat,lon\n" + rows)
    with pytest.raises(DataValidationError) as err:
        Catalog.read(path)
    assert str(path) in str(err.value) and where in str(err.value)


def test_catalogue_values_must_be_finite(tmp_path: Path) -> None:
    path = tmp_path / "catalog.parquet"
    pl.DataFrame({"item_id": [1, 2], "value": [1.0, float("inf")]}).write_parquet(path)
    with pytest.raises(DataValidationError, match=r"row 2 \(item_id 2\), column 'value'"):
        Catalog.read(path)


def test_catalogue_unknown_coordinates_stay_allowed(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text("item_id,lat,lon\n1,90,-180\n2,,\n3,-90,180\n")
    assert Catalog.read(path).table.height == 3


# ----------------------------------------------------------------------------- content type
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
@pytest.mark.parametrize("path", ["/recommend", "/events"])
def test_wrong_content_type_is_415_naming_json(
    client: TestClient, path: str, content_type: str | None
) -> None:
    body = b'{"user_id": 1}' if path == "/recommend" else b'{"events": [{"user_id": 1, "event": "click"}]}'
    headers = {} if content_type is None else {"Content-Type": content_type}
    r = client.post(path, content=body, headers=headers)
    assert r.status_code == 415, r.text
    assert "application/json" in r.json()["detail"]


def test_json_content_type_with_charset_is_fine(client: TestClient) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    assert client.post("/recommend", content=b'{"user_id": 1}', headers=headers).status_code == 200


# ----------------------------------------------------------------------------- fuzzing
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0, 1, -1, 0.5, 2**63, 1e308, EARLIEST, LATEST])
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
valid_location = {"lat": 52.5, "lon": 13.4, "max_distance_km": 50, "distance_penalty": 0.01}
valid_filters = {
    "exclude_seen": True,
    "allow_items": [1, 2, 3],
    "deny_items": [4],
    "categories": ["drama"],
    "exclude_categories": ["comedy"],
    "segment": "adult",
    "location": valid_location,
}
valid_recommend = {
    "user_id": 1,
    "history": [1, 2],
    "history_timestamps": [EARLIEST, EARLIEST + 60],
    "request_time": EARLIEST + 120,
    "k": 5,
    "filters": valid_filters,
    "ranking": "score",
    "exploration": "epsilon:0.1",
    "exploration_seed": 3,
}
valid_slate = {
    "user_id": 1,
    "history": [1, 2],
    "history_timestamps": [EARLIEST, EARLIEST + 60],
    "k": 3,
    "filters": valid_filters,
    "ranking": "score",
    "carousels": [
        {"name": "drama", "category": "drama", "filters": {"deny_items": [5]}},
        {"name": "near", "filters": {"location": valid_location}},
    ],
    "allow_duplicates": False,
    "rank_carousels": True,
}
valid_similar = {"item_id": 1, "k": 5, "filters": {**valid_filters, "exclude_seen": False}}
valid_event = {
    "user_id": "u",
    "event": "click",
    "item_id": 1,
    "timestamp": 1_700_000_000,
    "value": 1.0,
    "propensity": 0.5,
    "request_id": "r",
    "experiment": "e",
    "variant": "v",
}


def _mutate(body: dict, path: tuple[str, ...], value: object) -> dict:
    """``body`` with the field at ``path`` replaced by ``value`` (unchanged if a parent is no object)."""
    out = dict(body)
    if len(path) == 1:
        out[path[0]] = value
    elif isinstance(out.get(path[0]), dict):
        out[path[0]] = _mutate(out[path[0]], path[1:], value)
    return out


def _paths(body: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in body.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out += _paths(value, (*prefix, key))
    return out


def _mutate_carousel(body: dict, index: int, path: tuple[str, ...], value: object) -> dict:
    """``body`` with field ``path`` of carousel ``index`` replaced by ``value``."""
    carousels = list(body["carousels"]) if isinstance(body.get("carousels"), list) else []
    if index < len(carousels) and isinstance(carousels[index], dict):
        carousels[index] = _mutate(carousels[index], path, value)
        return {**body, "carousels": carousels}
    return body


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    endpoint=st.sampled_from(["/recommend", "/events"]),
    n_fields=st.integers(1, 3),
)
def test_fuzz_each_field_never_5xx(
    client: TestClient, data: st.DataObject, endpoint: str, n_fields: int
) -> None:
    """Any JSON value in any (nested) field of a valid body: the answer is 2xx or 4xx with a message."""
    body = valid_recommend if endpoint == "/recommend" else valid_event
    for path in data.draw(st.lists(st.sampled_from(_paths(body)), min_size=1, max_size=n_fields)):
        body = _mutate(body, path, data.draw(json_values))
    payload = body if endpoint == "/recommend" else {"events": [body]}
    r = client.post(endpoint, json=payload)
    assert r.status_code < 500, r.text
    assert r.status_code < 300 or isinstance(r.json()["detail"], str)


# ----------------------------------------------------------------------------- data-plane tokens, limits
WRITE, READ = "w-" + "x" * 30, "r-" + "y" * 30


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, bundle: dict[str, Path]) -> Iterator[TestClient]:
    settings_ = Settings(
        model_dir=bundle["model"],
        state_db=tmp_path_factory.mktemp("guarded") / "state.sqlite",
        events_token=WRITE,
        read_token=READ,
        max_events_per_request=3,
        max_request_history=4,
    )
    with TestClient(create_app(settings_)) as c:
        yield c


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


EVENT = {"user_id": "w", "event": "click", "item_id": 1}


@pytest.mark.parametrize(
    "header", [None, WRITE, f"Basic {WRITE}", f"Bearer {WRITE}x", f"Bearer {READ}", "Bearer"]
)
def test_events_need_the_write_token(guarded: TestClient, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    r = guarded.post("/events", json={"events": [EVENT]}, headers=headers)
    assert r.status_code == 401 and "VITRINA_EVENTS_TOKEN" in r.json()["detail"], r.text
    assert r.headers["WWW-Authenticate"] == "Bearer"
    history = guarded.post("/recommend", json={"user_id": "w"}, headers=_bearer(READ)).json()
    assert history["fallback_reason"] == "unknown_user"  # nothing was written


def test_write_token_writes_and_read_token_reads(guarded: TestClient) -> None:
    r = guarded.post("/events", json={"events": [{**EVENT, "user_id": "ok"}]}, headers=_bearer(WRITE))
    assert r.status_code == 200 and r.json()["interactions"] == 1, r.text
    for path, body in [
        ("/recommend", {"user_id": "ok"}),
        ("/slate", {"user_id": "ok", "carousels": [{"name": "a"}]}),
        ("/similar", {"item_id": 1}),
    ]:
        assert guarded.post(path, json=body).status_code == 401
        assert guarded.post(path, json=body, headers=_bearer(WRITE)).status_code == 401
        assert guarded.post(path, json=body, headers=_bearer(READ)).status_code in (200, 400), path
    assert guarded.get("/health").status_code == 200  # probes stay open


def test_without_tokens_the_data_plane_is_open(client: TestClient) -> None:
    assert client.post("/events", json={"events": [EVENT]}).status_code == 200
    assert client.post("/recommend", json={"user_id": "w"}).status_code == 200


def test_per_request_limits_are_413_naming_the_limit(guarded: TestClient) -> None:
    r = guarded.post("/events", json={"events": [EVENT] * 4}, headers=_bearer(WRITE))
    assert r.status_code == 413, r.text
    assert r.json()["detail"].startswith("events: 4 entries") and "--max-events-per-request" in r.text
    assert guarded.post("/events", json={"events": [EVENT] * 3}, headers=_bearer(WRITE)).status_code == 200
    for path, extra in [("/recommend", {}), ("/slate", {"carousels": [{"name": "a"}]})]:
        r = guarded.post(path, json={"history": [1, 2, 3, 4, 5], **extra}, headers=_bearer(READ))
        assert r.status_code == 413 and "history: 5 entries" in r.json()["detail"], r.text
        r = guarded.post(path, json={"history": [1, 2, 3, 4], **extra}, headers=_bearer(READ))
        assert r.status_code == 200, r.text


def test_serve_reads_tokens_from_the_environment_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bundle: dict[str, Path]
) -> None:
    import typer
    import uvicorn
    from typer.testing import CliRunner

    from vitrina.cli import app as cli

    started: list[Settings] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **_: started.append(app.state.vitrina["settings"]))
    monkeypatch.setenv("VITRINA_EVENTS_TOKEN", WRITE)
    monkeypatch.setenv("VITRINA_READ_TOKEN", "")
    args = [
        "serve",
        str(bundle["model"]),
        "--state-db",
        str(tmp_path / "s.db"),
        "--max-events-per-request",
        "7",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert started[0].events_token == WRITE and started[0].read_token is None  # empty: unset
    assert started[0].max_events_per_request == 7
    serve = typer.main.get_command(cli).commands["serve"]  # type: ignore[attr-defined]
    assert {p.name: p.envvar for p in serve.params}["redis_url"] == "VITRINA_REDIS_URL"  # may hold a password
    result = CliRunner().invoke(cli, [*args, "--events-token", "x"])
    assert result.exit_code == 2 and "No such option" in result.output
    result = CliRunner().invoke(cli, [*args, "--max-request-history", "1000000"])
    assert result.exit_code == 2 and "at most" in result.output


CAROUSEL_PATHS = [p for c in valid_slate["carousels"] for p in _paths(c)]  # type: ignore[attr-defined]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), endpoint=st.sampled_from(["/slate", "/similar"]), n_fields=st.integers(1, 3))
def test_fuzz_slate_and_similar_fields_never_5xx(
    ease_client: TestClient, data: st.DataObject, endpoint: str, n_fields: int
) -> None:
    """As for /recommend: any JSON value in any (nested) field of a valid /slate or /similar body,
    carousels' own fields included, is answered 2xx or 4xx with a message, never 5xx."""
    body = valid_slate if endpoint == "/slate" else valid_similar
    for _ in range(data.draw(st.integers(1, n_fields))):
        value = data.draw(json_values)
        if endpoint == "/slate" and data.draw(st.booleans()):
            index = data.draw(st.integers(0, 1))
            body = _mutate_carousel(body, index, data.draw(st.sampled_from(CAROUSEL_PATHS)), value)
        else:
            body = _mutate(body, data.draw(st.sampled_from(_paths(body))), value)
    r = ease_client.post(endpoint, json=body)
    assert r.status_code < 500, r.text
    assert r.status_code < 300 or isinstance(r.json()["detail"], str)


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [("/slate", valid_slate), ("/similar", valid_similar)],
)
def test_fuzz_seeds_are_valid(ease_client: TestClient, endpoint: str, body: dict) -> None:
    """The fuzzed bodies start valid, so the fuzz explores each field rather than one early 422."""
    r = ease_client.post(endpoint, json=body)
    assert r.status_code == 200, r.text
