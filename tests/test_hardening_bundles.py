"""Issue 12, model bundles and hot swap: every bad, tampered or inconsistent bundle is one
ModelLoadError; a refused hot swap is a 4xx and the previous model keeps serving."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file
from typer.testing import CliRunner

from vitrina.cli import app as cli_app
from vitrina.errors import ModelLoadError
from vitrina.models.base import CONFIG_DIGEST, _config_digest, load_model
from vitrina.models.registry import make_model
from vitrina.serving.app import create_app
from vitrina.serving.service import Settings

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, ml100k_head: pl.DataFrame) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    df = ml100k_head.head(5000)
    return {
        "ease": make_model("ease", {"l2": 50.0}).fit(df).save(root / "ease"),
        "popular": make_model("popular").fit(df).save(root / "popular"),
    }


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _reseal(path: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Re-sign a bundle after a change, as a careless (not a malicious) tool would: every listed
    file's checksum and config.json's own are recomputed, so only the deeper checks can object."""
    config = json.loads((path / "config.json").read_text())
    if edit is not None:
        edit(config)
    digests = config.get("sha256")
    for name in list(digests) if isinstance(digests, dict) else []:
        if name in ("state.safetensors", "users.parquet", "items.parquet"):
            digests[name] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    config[CONFIG_DIGEST] = _config_digest(config)
    (path / "config.json").write_text(json.dumps(config))


def _edit_state(path: Path, change: Callable[[dict[str, np.ndarray]], None]) -> None:
    state = load_file(str(path / "state.safetensors"))
    change(state)
    save_file(state, str(path / "state.safetensors"))
    _reseal(path)


def test_saved_bundle_round_trips(saved: dict[str, Path]) -> None:
    for path in saved.values():
        assert load_model(path).items_ is not None


def test_editing_config_json_is_noticed(saved: dict[str, Path], tmp_path: Path) -> None:
    path = _copy(saved["ease"], tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    config["params"]["l2"] = 1.0
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="was edited after saving"):
        load_model(path)
    del config[CONFIG_DIGEST]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="has no checksum of itself"):
        load_model(path)


def test_missing_or_unsafe_file_list_is_refused(saved: dict[str, Path], tmp_path: Path) -> None:
    path = _copy(saved["popular"], tmp_path / "m")
    _reseal(path, lambda c: c.pop("sha256"))
    with pytest.raises(ModelLoadError, match="'sha256' must map"):
        load_model(path)
    path = _copy(saved["popular"], tmp_path / "m2")
    _reseal(path, lambda c: c["sha256"].pop("users.parquet"))
    with pytest.raises(ModelLoadError, match=r"no checksum for \['users.parquet'\]"):
        load_model(path)
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    digest = hashlib.sha256(outside.read_bytes()).hexdigest()
    for name in (str(outside), "../secret.txt", "..", "sub/../../secret.txt"):
        path = _copy(saved["popular"], tmp_path / f"m-{abs(hash(name))}")
        _reseal(path, lambda c, n=name: c["sha256"].update({n: digest}))
        with pytest.raises(ModelLoadError, match="is not a file name inside the bundle"):
            load_model(path)


def test_symlinked_file_is_refused(saved: dict[str, Path], tmp_path: Path) -> None:
    path = _copy(saved["popular"], tmp_path / "m")
    real = tmp_path / "items-elsewhere.parquet"
    shutil.move(path / "items.parquet", real)
    (path / "items.parquet").symlink_to(real)
    with pytest.raises(ModelLoadError, match="not a regular file"):
        load_model(path)


def test_inconsistent_weights_are_refused(saved: dict[str, Path], tmp_path: Path) -> None:
    def wrong_shape(state: dict[str, np.ndarray]) -> None:
        key = next(k for k in state if k.startswith("model."))
        state[key] = np.ascontiguousarray(state[key][:-3])

    def nan(state: dict[str, np.ndarray]) -> None:
        key = next(k for k in state if k.startswith("model."))
        state[key] = state[key].copy()
        state[key].flat[0] = np.nan

    def bad_history(state: dict[str, np.ndarray]) -> None:
        state["history.items"] = state["history.items"] + 10**6

    for name, change, message in [
        ("shape", wrong_shape, "do not match the id maps|not a loadable"),
        ("nan", nan, "NaN or infinite"),
        ("history", bad_history, "user histories do not match"),
    ]:
        path = _copy(saved["ease"], tmp_path / name)
        _edit_state(path, change)
        with pytest.raises(ModelLoadError, match=message):
            load_model(path)


def test_deeply_nested_config_is_one_error(saved: dict[str, Path], tmp_path: Path) -> None:
    path = _copy(saved["popular"], tmp_path / "m")
    (path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelLoadError):
        load_model(path)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["model", "params", "format", "schema_version", "sha256", "lineage"]), value=_json)
def test_fuzz_config_values_are_one_error_type(
    saved: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, key: str, value: Any
) -> None:
    path = _copy(saved["ease"], tmp_path_factory.mktemp("fuzz") / "m")
    _reseal(path, lambda c: c.__setitem__(key, value))
    try:
        load_model(path)
    except ModelLoadError as exc:
        assert str(path) in str(exc)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["state.safetensors", "users.parquet", "items.parquet"]),
    data=st.binary(max_size=300),
)
def test_fuzz_file_contents_are_one_error_type(
    saved: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, name: str, data: bytes
) -> None:
    path = _copy(saved["popular"], tmp_path_factory.mktemp("fuzz") / "m")
    (path / name).write_bytes(data)
    _reseal(path)
    with pytest.raises(ModelLoadError):
        load_model(path)


# --------------------------------------------------------------------------- service and CLI
@pytest.fixture
def client(saved: dict[str, Path], tmp_path: Path) -> Iterator[TestClient]:
    settings_ = Settings(model_dir=saved["popular"], state_db=tmp_path / "s.db", admin_token=TOKEN)
    with TestClient(create_app(settings_)) as c:
        yield c


def test_refused_swaps_keep_the_old_model(client: TestClient, saved: dict[str, Path], tmp_path: Path) -> None:
    before = client.get("/health").json()["model_version"]
    bad = _copy(saved["ease"], saved["ease"].parent / f"nan-{tmp_path.name}")  # inside the model root

    def nan(state: dict[str, np.ndarray]) -> None:
        key = next(k for k in state if k.startswith("model."))
        state[key] = np.full_like(state[key], np.nan)

    _edit_state(bad, nan)
    r = client.post("/admin/model", json={"model_dir": str(bad)}, headers=AUTH)
    assert r.status_code == 422 and "NaN" in r.json()["detail"]
    elsewhere = _copy(saved["ease"], tmp_path / "elsewhere")
    r = client.post("/admin/model", json={"model_dir": str(elsewhere)}, headers=AUTH)
    assert r.status_code == 403 and "outside the model root" in r.json()["detail"]
    link = saved["ease"].parent / f"link-{tmp_path.name}"
    link.symlink_to(elsewhere)  # a link inside the root to a bundle outside it
    assert client.post("/admin/model", json={"model_dir": str(link)}, headers=AUTH).status_code == 403
    assert client.get("/health").json()["model_version"] == before
    assert client.post("/recommend", json={"user_id": 1, "k": 5}).status_code == 200
    ok = client.post("/admin/model", json={"model_dir": str(saved["ease"])}, headers=AUTH)
    assert ok.status_code == 200 and ok.json()["previous_version"] == before


@pytest.mark.parametrize(
    "header",
    [TOKEN, f"Basic {TOKEN}", f"Bearer{TOKEN}", "Bearer", f"Token {TOKEN}", f"Bearer {TOKEN}x", ""],
)
def test_authorization_must_be_bearer(client: TestClient, saved: dict[str, Path], header: str) -> None:
    body = {"model_dir": str(saved["popular"])}
    assert client.post("/admin/model", json=body, headers={"Authorization": header}).status_code == 401


def test_bearer_scheme_is_case_insensitive(client: TestClient, saved: dict[str, Path]) -> None:
    body = {"model_dir": str(saved["popular"])}
    assert (
        client.post("/admin/model", json=body, headers={"Authorization": f"bearer {TOKEN}"}).status_code
        == 200
    )


def test_serve_on_a_bad_bundle_is_one_line(saved: dict[str, Path], tmp_path: Path) -> None:
    path = _copy(saved["popular"], tmp_path / "m")
    (path / "users.parquet").write_bytes(b"nope")
    result = CliRunner().invoke(cli_app, ["serve", str(path), "--state-db", str(tmp_path / "s.db")])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and "users.parquet: checksum mismatch" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_event_label_cardinality_is_bounded(client: TestClient) -> None:
    from vitrina.serving.metrics import MAX_EVENT_LABELS

    for i in range(MAX_EVENT_LABELS + 30):
        r = client.post("/events", json={"events": [{"user_id": "u", "event": f"e{i}", "item_id": 1}]})
        assert r.status_code == 200, r.text
    lines = [x for x in client.get("/metrics").text.splitlines() if x.startswith("vitrina_events_total{")]
    assert len(lines) <= MAX_EVENT_LABELS + 1 and any('event="other"' in x for x in lines)


@pytest.mark.parametrize("k", [True, "5", 5.0, "52.5", None])
def test_k_is_strictly_an_integer(client: TestClient, k: object) -> None:
    """No coercion: `true` is not 1 and `"5"` is not 5 (issue 12)."""
    r = client.post("/recommend", json={"user_id": 1, "k": k})
    assert r.status_code == 422 and "k" in r.json()["detail"], r.text
