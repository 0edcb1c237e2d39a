"""HTTP API of vitrina.serving, in process: endpoints, filters, slates, fallbacks, swaps, bad input."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vitrina.models.registry import make_model
from vitrina.serving.app import create_app
from vitrina.serving.calibration import ExpectedValueModel, Platt
from vitrina.serving.service import Service, Settings

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ml-100k" / "u.data"
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def load_slice(n: int = 20_000) -> pl.DataFrame:
    if not DATA.is_file():
        pytest.skip(f"{DATA} not found (shared datasets live next to the project)")
    df = pl.read_csv(
        DATA, separator="\t", has_header=False, new_columns=["user_id", "item_id", "rating", "timestamp"]
    )
    return df.head(n).drop("rating").with_columns(weight=pl.lit(1.0))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    df = load_slice()
    out = {
        "popular": make_model("popular").fit(df).save(root / "popular"),
        "ease": make_model("ease", {"l2": 100.0}).fit(df).save(root / "ease"),
    }
    items = df["item_id"].unique().sort().to_list()
    rng = np.random.default_rng(0)
    catalog = pl.DataFrame(
        {
            "item_id": items,
            "available": [i % 10 != 0 for i in items],  # every 10th item is out of stock
            "category": [["drama", "comedy", "action"][i % 3] for i in items],
            "lat": rng.uniform(52.0, 53.0, len(items)),
            "lon": rng.uniform(13.0, 14.0, len(items)),
            "value": [1.0 + (i % 5) for i in items],
            "segments": ["adult" if i % 7 == 0 else None for i in items],
        }
    )
    catalog.write_parquet(root / "catalog.parquet")
    out["catalog"] = root / "catalog.parquet"
    ExpectedValueModel(Platt(0.05, -2.0), Platt(-0.01, 1.0)).save(root / "calibration.json")
    out["calibration"] = root / "calibration.json"
    return out


def make_client(tmp_path: Path, model: Path, **kw: object) -> TestClient:
    settings_ = Settings(model_dir=model, state_db=tmp_path / "state.sqlite", admin_token=TOKEN, **kw)  # type: ignore[arg-type]
    return TestClient(create_app(settings_))


@pytest.fixture
def client(tmp_path: Path, bundles: dict[str, Path]) -> Iterator[TestClient]:
    with make_client(
        tmp_path, bundles["ease"], catalog=bundles["catalog"], calibration=bundles["calibration"]
    ) as c:
        yield c


@pytest.fixture
def bare(tmp_path: Path, bundles: dict[str, Path]) -> Iterator[TestClient]:
    """Popular, no catalogue."""
    with make_client(tmp_path, bundles["popular"]) as c:
        yield c


def ids(resp: dict) -> list:
    return [x["item_id"] for x in resp["items"]]


# ----------------------------------------------------------------------------- basic endpoints
def test_health_metrics_openapi(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model_version"].startswith("ease@")
    client.post("/recommend", json={"user_id": 999_999, "k": 3})
    text = client.get("/metrics").text
    assert 'vitrina_requests_total{method="POST",route="/recommend",status="200"} 1' in text
    assert 'vitrina_fallbacks_total{reason="unknown_user"} 1' in text
    assert 'vitrina_request_seconds_bucket{route="/recommend",le="+Inf"} 1' in text
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/recommend", "/slate", "/events", "/health", "/metrics", "/admin/model"} <= set(paths)


def test_503_until_ready(tmp_path: Path, bundles: dict[str, Path]) -> None:
    gate = threading.Event()

    def slow(s: Settings) -> Service:
        gate.wait(10)
        return Service.from_settings(s)

    app = create_app(
        Settings(model_dir=bundles["popular"], state_db=tmp_path / "s.db"), build=slow, background_load=True
    )
    with TestClient(app) as c:
        assert c.get("/health").status_code == 503
        r = c.post("/recommend", json={"user_id": 1})
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        gate.set()
        for _ in range(200):
            if c.get("/health").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert c.post("/recommend", json={"user_id": 1}).status_code == 200


def test_recommend_known_user(client: TestClient) -> None:
    r = client.post("/recommend", json={"user_id": 196, "k": 10, "filters": {"segment": "adult"}}).json()
    assert len(r["items"]) == 10 and not r["fallback"] and not r["fewer_than_k"]
    scores = [x["score"] for x in r["items"]]
    assert scores == sorted(scores, reverse=True)
    assert r["variant"] is None and r["unknown_items"] == []


def test_unknown_user_falls_back_to_popular(bare: TestClient) -> None:
    r = bare.post("/recommend", json={"user_id": "nobody", "k": 5}).json()
    assert r["fallback"] and r["fallback_reason"] == "unknown_user"
    assert [x["score"] for x in r["items"]] == sorted((x["score"] for x in r["items"]), reverse=True)


def test_triggers_for_unknown_user_and_unknown_items(client: TestClient) -> None:
    r = client.post(
        "/recommend", json={"user_id": "new", "history": [50, "not-an-item", 99_999], "k": 5}
    ).json()
    assert r["fallback"] and r["fallback_reason"] == "unknown_user_history"
    assert r["unknown_items"] == ["not-an-item", 99_999]
    assert 50 not in ids(r)
    anon = client.post("/recommend", json={"history": [50], "k": 5}).json()
    assert not anon["fallback"] and ids(anon) == ids(r)
    r = client.post("/recommend", json={"history": ["nope"], "k": 3}).json()
    assert r["fallback_reason"] == "no_known_history_items" and len(r["items"]) == 3


# ----------------------------------------------------------------------------- filters
def test_filters_before_ranking(client: TestClient, bundles: dict[str, Path]) -> None:
    cat = pl.read_parquet(bundles["catalog"])
    base = {"user_id": 196, "k": 30}
    seen = set(pl.DataFrame(load_slice()).filter(pl.col("user_id") == 196)["item_id"].to_list())

    r = client.post("/recommend", json=base).json()
    got = ids(r)
    assert not seen & set(got), "seen items must be excluded"
    unavailable = set(cat.filter(~pl.col("available"))["item_id"].to_list())
    assert not unavailable & set(got)
    restricted = set(cat.filter(pl.col("segments").is_not_null())["item_id"].to_list())
    assert not restricted & set(got), "segment-restricted items need the segment"

    with_seen = ids(client.post("/recommend", json={**base, "filters": {"exclude_seen": False}}).json())
    assert seen & set(with_seen)

    allow = [*got[5:8], 10_000_000]
    r = client.post("/recommend", json={**base, "filters": {"allow_items": allow}}).json()
    assert ids(r) == got[5:8] and r["fewer_than_k"] and r["n_eligible"] == 3

    deny = ids(client.post("/recommend", json={**base, "filters": {"deny_items": got[:3]}}).json())
    assert deny[: len(got) - 3] == got[3:]

    comedy = set(cat.filter(pl.col("category") == "comedy")["item_id"].to_list())
    r = client.post("/recommend", json={**base, "filters": {"categories": ["comedy"]}}).json()
    assert set(ids(r)) <= comedy and len(r["items"]) == 30
    r = client.post(
        "/recommend", json={**base, "filters": {"exclude_categories": ["comedy", "drama"]}}
    ).json()
    assert not set(ids(r)) & comedy


def test_segment_unlocks_restricted_items(client: TestClient, bundles: dict[str, Path]) -> None:
    cat = pl.read_parquet(bundles["catalog"])
    restricted = cat.filter(pl.col("segments").is_not_null() & pl.col("available"))["item_id"].to_list()[:5]
    body = {"user_id": 196, "k": 5, "filters": {"allow_items": restricted, "exclude_seen": False}}
    assert client.post("/recommend", json=body).json()["items"] == []
    body["filters"]["segment"] = "adult"
    assert sorted(ids(client.post("/recommend", json=body).json())) == sorted(restricted)


def test_location_filter_and_penalty(client: TestClient, bundles: dict[str, Path]) -> None:
    loc = {"lat": 52.5, "lon": 13.5, "max_distance_km": 20.0}
    r = client.post("/recommend", json={"user_id": 196, "k": 20, "filters": {"location": loc}}).json()
    assert r["items"] and all(x["distance_km"] <= 20.0 for x in r["items"])
    plain = client.post(
        "/recommend",
        json={"user_id": 196, "k": 20, "filters": {"location": {**loc, "max_distance_km": None}}},
    )
    heavy = {**loc, "max_distance_km": None, "distance_penalty": 1000.0}
    pen = client.post("/recommend", json={"user_id": 196, "k": 20, "filters": {"location": heavy}}).json()
    dists = [x["distance_km"] for x in pen["items"]]
    assert dists == sorted(dists), "a huge penalty orders by distance"
    assert ids(plain.json()) != ids(pen)


def test_rules_needing_catalogue_are_refused_without_one(bare: TestClient) -> None:
    r = bare.post("/recommend", json={"user_id": 1, "filters": {"categories": ["x"]}})
    assert r.status_code == 400 and "--catalog" in r.json()["detail"]


def test_expected_value_ranking(client: TestClient, bare: TestClient, bundles: dict[str, Path]) -> None:
    ev = client.post("/recommend", json={"user_id": 196, "k": 10, "ranking": "expected_value"}).json()
    cal = ExpectedValueModel.load(bundles["calibration"])
    raw = client.post("/recommend", json={"user_id": 196, "k": 200}).json()
    value = dict(pl.read_parquet(bundles["catalog"]).select("item_id", "value").iter_rows())
    expected = sorted(
        (
            (float(cal(np.array([x["score"]]), np.array([value[x["item_id"]]]))[0]), x["item_id"])
            for x in raw["items"]
        ),
        reverse=True,
    )
    assert [x["score"] for x in ev["items"]] == pytest.approx([s for s, _ in expected[:10]], rel=1e-5)
    r = bare.post("/recommend", json={"user_id": 196, "ranking": "expected_value"})
    assert r.status_code == 400 and "--calibration" in r.json()["detail"]


# ----------------------------------------------------------------------------- slates
def test_slate_deduplicates_and_ranks_carousels(client: TestClient, bundles: dict[str, Path]) -> None:
    carousels = [
        {"name": "drama", "category": "drama"},
        {"name": "comedy", "category": "comedy"},
        {"name": "all", "filters": {"exclude_categories": ["action"]}},
    ]
    r = client.post("/slate", json={"user_id": 196, "k": 8, "carousels": carousels}).json()
    got = [c["name"] for c in r["carousels"]]
    assert sorted(got) == ["all", "comedy", "drama"]
    scores = [c["score"] for c in r["carousels"]]
    assert scores[0] == max(scores)
    all_items = [i for c in r["carousels"] for i in ids(c)]
    assert len(all_items) == len(set(all_items)) == 24
    cat = dict(pl.read_parquet(bundles["catalog"]).select("item_id", "category").iter_rows())
    for c in r["carousels"]:
        if c["name"] in ("drama", "comedy"):
            assert {cat[i] for i in ids(c)} == {c["name"]}
    dup = client.post(
        "/slate", json={"user_id": 196, "k": 8, "carousels": carousels, "allow_duplicates": True}
    ).json()
    dup_items = [i for c in dup["carousels"] for i in ids(c)]
    assert len(dup_items) > len(set(dup_items))
    fixed = client.post(
        "/slate", json={"user_id": 196, "k": 8, "carousels": carousels, "rank_carousels": False}
    ).json()
    assert [c["name"] for c in fixed["carousels"]] == ["drama", "comedy", "all"]


def test_slate_bad_input(client: TestClient) -> None:
    r = client.post("/slate", json={"user_id": 1, "carousels": [{"name": "a"}, {"name": "a"}]})
    assert r.status_code == 422 and "unique" in r.json()["detail"]
    assert client.post("/slate", json={"user_id": 1, "carousels": []}).status_code == 422


# ----------------------------------------------------------------------------- events
def test_events_update_history_at_once(client: TestClient) -> None:
    before = client.post("/recommend", json={"user_id": "fresh", "k": 10}).json()
    assert before["fallback_reason"] == "unknown_user"
    clicked = [181, 50, 172]
    events = [{"user_id": "fresh", "item_id": i, "event": "click"} for i in clicked]
    events.append({"user_id": "fresh", "item_id": 1, "event": "exposure"})
    ack = client.post("/events", json={"events": events}).json()
    assert ack == {"accepted": 4, "interactions": 3}
    after = client.post("/recommend", json={"user_id": "fresh", "k": 10}).json()
    assert after["fallback_reason"] == "unknown_user_history"
    assert not set(clicked) & set(ids(after))
    assert ids(after) != ids(before)
    triggered = client.post("/recommend", json={"history": clicked, "k": 10}).json()
    assert ids(after) == ids(triggered)
    known = client.post("/recommend", json={"user_id": 196, "k": 10}).json()
    client.post("/events", json={"events": [{"user_id": 196, "item_id": ids(known)[0], "event": "purchase"}]})
    again = client.post("/recommend", json={"user_id": 196, "k": 10}).json()
    assert ids(known)[0] not in ids(again) and not again["fallback"]
    assert client.get("/admin/users/fresh/history", headers=AUTH).json() == {
        "items": [str(i) for i in clicked]
    }


def test_event_validation(client: TestClient) -> None:
    assert client.post("/events", json={"events": []}).status_code == 422
    r = client.post("/events", json={"events": [{"user_id": 1, "event": "click", "propensity": 2}]})
    assert r.status_code == 422 and "propensity" in r.json()["detail"]
    too_many = {"events": [{"user_id": 1, "event": "click"}] * 1001}
    r = client.post("/events", json=too_many)  # the default per-request limit, 1000
    assert r.status_code == 413 and "--max-events-per-request" in r.json()["detail"]


# ----------------------------------------------------------------------------- experiments
def test_experiment_variants_serve_their_model(tmp_path: Path, bundles: dict[str, Path]) -> None:
    config = {
        "experiments": [
            {"name": "ranker", "layer": "home", "salt": "t", "variants": {"control": 0.5, "ease": 0.5}}
        ]
    }
    config["experiments"][0]["models"] = {"ease": str(bundles["ease"])}
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(config))
    with make_client(tmp_path, bundles["popular"], experiments=path) as c:
        seen = {}
        for u in range(1, 60):
            r = c.post("/recommend", json={"user_id": u, "k": 3}).json()
            assert r["experiment"] == "ranker"
            seen[r["variant"]] = r["model_version"].split("@")[0]
        assert seen == {"control": "popular", "ease": "ease"}
        assert set(c.get("/health").json()["variants"]) == {"ranker/ease"}
        service = c.app.state.vitrina["service"]  # type: ignore[attr-defined]
        service.exposures.close()
        rows = [r for r in service.store.rows() if r.event == "exposure"]
        assert len(rows) == 59 and {r.experiment for r in rows} == {"ranker"}
        assert all(r.request_id and r.variant in ("control", "ease") for r in rows)
        swap = c.post(
            "/admin/model",
            json={"model_dir": str(bundles["popular"]), "variant": "ranker/ease"},
            headers=AUTH,
        )
        assert swap.status_code == 200 and swap.json()["model_version"].startswith("popular@")
        bad = c.post(
            "/admin/model", json={"model_dir": str(bundles["popular"]), "variant": "ranker/x"}, headers=AUTH
        )
        assert bad.status_code == 400


# ----------------------------------------------------------------------------- admin / hot swap
def test_admin_requires_token(
    client: TestClient, bare: TestClient, bundles: dict[str, Path], tmp_path: Path
) -> None:
    body = {"model_dir": str(bundles["popular"])}
    assert client.post("/admin/model", json=body).status_code == 401
    assert (
        client.post("/admin/model", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    )
    with TestClient(create_app(Settings(model_dir=bundles["popular"], state_db=tmp_path / "x.db"))) as c:
        assert c.post("/admin/model", json=body, headers=AUTH).status_code == 403


def test_hot_swap_under_load_and_corrupt_bundle(
    client: TestClient, bundles: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    corrupt = bundles["popular"].parent / f"corrupt-{tmp_path.name}"  # inside the model root
    shutil.copytree(bundles["popular"], corrupt)
    with open(corrupt / "state.safetensors", "r+b") as f:
        f.seek(50)
        f.write(b"\x00garbage")
    statuses: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            statuses.append(client.post("/recommend", json={"user_id": 196, "k": 10}).status_code)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    versions = []
    for model in ("popular", "ease", "popular", "ease"):
        r = client.post("/admin/model", json={"model_dir": str(bundles[model])}, headers=AUTH)
        assert r.status_code == 200
        versions.append(r.json()["model_version"])
        refused = client.post("/admin/model", json={"model_dir": str(corrupt)}, headers=AUTH)
        assert refused.status_code == 422 and "checksum" in refused.json()["detail"]
        assert client.get("/health").json()["model_version"] == versions[-1]
    stop.set()
    for t in threads:
        t.join()
    assert len(statuses) > 20 and set(statuses) == {200}
    assert 'vitrina_model_swaps_total{outcome="refused"} 4' in client.get("/metrics").text


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b'{"user_id": 1, "k": 0}', 422, "k: Input should be greater than or equal to 1"),
        (b'{"user_id": 1, "k": 5000}', 422, "k: Input should be less than or equal to 1000"),
        (b'{"user_id": 1, "k": "ten"}', 422, "k:"),
        (b'{"k": 10}', 422, "give user_id, a non-empty history"),
        (b'{"user_id": 1, "colour": "red"}', 422, "colour: Extra inputs are not permitted"),
        (b'{"user_id": 1, "filters": {"location": {"lat": 91, "lon": 0}}}', 422, "filters.location.lat"),
        (b'{"user_id": 1, "history": [1.5]}', 422, "history.0"),
        (b"[]", 422, "body"),
    ],
)
def test_bad_requests_say_what_is_wrong(client: TestClient, body: bytes, status: int, needle: str) -> None:
    r = client.post("/recommend", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_oversize_payload(client: TestClient) -> None:
    big = b'{"user_id": 1, "history": [' + b"1," * 600_000 + b"1]}"
    r = client.post("/recommend", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "bytes" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:
        yield b'{"user_id": 1, "history": ['
        for _ in range(300):
            yield b"1," * 2000
        yield b"1]}"

    r = client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
fields = st.sampled_from(["user_id", "history", "k", "filters", "ranking", "carousels", "allow_duplicates"])
bodies = st.dictionaries(fields, json_values, max_size=5) | json_values


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, path=st.sampled_from(["/recommend", "/slate", "/events"]))
def test_fuzz_never_500(client: TestClient, body: object, path: str) -> None:
    r = client.post(path, json=body)
    assert r.status_code in (200, 400, 413, 415, 422), r.text
    assert r.status_code == 200 or isinstance(r.json()["detail"], str)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    user=st.one_of(st.integers(-5, 1000), st.text(min_size=1, max_size=5)),
    history=st.lists(st.one_of(st.integers(0, 2000), st.text(min_size=1, max_size=3)), max_size=6),
    k=st.integers(1, 50),
    allow=st.none() | st.lists(st.integers(1, 300), max_size=20),
    cats=st.none() | st.lists(st.sampled_from(["drama", "comedy", "action", "opera"]), max_size=3),
)
def test_fuzz_valid_requests_keep_invariants(
    client: TestClient, user: int | str, history: list, k: int, allow: list | None, cats: list | None
) -> None:
    body = {
        "user_id": user,
        "history": history,
        "k": k,
        "filters": {"allow_items": allow, "categories": cats},
    }
    r = client.post("/recommend", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    got = ids(out)
    assert len(got) == len(set(got)) <= k and out["fewer_than_k"] == (len(got) < k)
    assert len(got) == min(k, out["n_eligible"])
    if allow is not None:
        assert set(got) <= set(allow)
    assert not {h for h in history if isinstance(h, int)} & set(got)
