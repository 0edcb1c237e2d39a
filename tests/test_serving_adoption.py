"""Serving ergonomics (issue 15): similar items (model and /similar), catalogues built from
dataset metadata, case-insensitive categories, and `vitrina serve` saying where it listens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from vitrina.cli import app
from vitrina.errors import ConfigError, DataValidationError, VitrinaError
from vitrina.models.ease import EASE
from vitrina.models.implicit_mf import ALS
from vitrina.models.popular import Popular
from vitrina.serving.app import create_app
from vitrina.serving.service import Settings

runner = CliRunner()


@pytest.fixture(scope="module")
def ease(ml100k_head: pl.DataFrame) -> EASE:
    return EASE(l2=100.0).fit(ml100k_head)


def test_similar_items_ease_is_its_item_item_row(ease: EASE) -> None:
    out = ease.similar_items([50, 181], k=5)
    assert out.columns == ["item_id", "similar_item_id", "score", "rank"]
    first = out.filter(pl.col("item_id") == 50)
    assert 50 not in first["similar_item_id"].to_list() and first["rank"].to_list() == [1, 2, 3, 4, 5]
    row = ease.similar_item_scores(ease.items_.to_internal(pl.Series([50])))[0]
    row[ease.items_.to_internal(pl.Series([50]))[0]] = -np.inf
    expected = ease.items_.to_external(np.argsort(-row, kind="stable")[:5]).to_list()
    assert first["similar_item_id"].to_list() == expected
    denied = ease.similar_items([50], k=5, deny_items=[expected[0]])
    assert expected[0] not in denied["similar_item_id"].to_list()


def test_similar_items_embeddings_are_cosine(ml100k_head: pl.DataFrame) -> None:
    als = ALS(factors=16, iterations=3, num_threads=1).fit(ml100k_head)
    scores = als.similar_item_scores(np.array([0, 1]))
    assert scores.shape == (2, len(als.items_)) and np.allclose(scores[[0, 1], [0, 1]], 1.0, atol=1e-5)
    assert (scores <= 1.0 + 1e-5).all()


def test_similar_items_errors(ease: EASE, ml100k_head: pl.DataFrame) -> None:
    with pytest.raises(DataValidationError, match="unknown item"):
        ease.similar_items([10**9])
    with pytest.raises(ConfigError, match="wrap a single id"):
        ease.similar_items(50)
    with pytest.raises(ConfigError, match="no item-item signal"):
        Popular().fit(ml100k_head).similar_items([50])


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, ease: EASE, ml100k_head: pl.DataFrame
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adoption")
    items = ml100k_head["item_id"].unique().sort().to_list()
    pl.DataFrame({"item_id": items, "category": [["Drama", "Comedy"][i % 2] for i in items]}).write_parquet(
        root / "catalog.parquet"
    )
    return {
        "ease": ease.save(root / "ease"),
        "popular": Popular().fit(ml100k_head).save(root / "popular"),
        "catalog": root / "catalog.parquet",
    }


@pytest.fixture
def client(tmp_path: Path, served: dict[str, Path]) -> Iterator[TestClient]:
    settings = Settings(model_dir=served["ease"], catalog=served["catalog"], state_db=tmp_path / "s.sqlite")
    with TestClient(create_app(settings)) as c:
        yield c


def test_similar_endpoint(client: TestClient, ease: EASE) -> None:
    r = client.post("/similar", json={"item_id": 50, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["item_id"] for x in body["items"]] == ease.similar_items([50], k=5)["similar_item_id"].to_list()
    comedy = client.post(
        "/similar", json={"item_id": 50, "k": 5, "filters": {"categories": ["comedy"]}}
    ).json()
    assert comedy["items"] and all(
        x["item_id"] % 2 == 1 for x in comedy["items"]
    )  # lower case matches Comedy
    assert client.post("/similar", json={"item_id": 10**9}).status_code == 404
    assert client.post("/similar", json={"item_id": 50, "k": 0}).status_code == 422


def test_similar_endpoint_popular_is_a_clear_400(tmp_path: Path, served: dict[str, Path]) -> None:
    settings = Settings(model_dir=served["popular"], state_db=tmp_path / "s.sqlite")
    with TestClient(create_app(settings)) as c:
        r = c.post("/similar", json={"item_id": 50})
    assert r.status_code == 400 and "no item-item signal" in r.text


def test_recommend_category_is_case_insensitive(client: TestClient) -> None:
    upper = client.post(
        "/recommend", json={"user_id": 1, "k": 5, "filters": {"categories": ["Drama"]}}
    ).json()
    lower = client.post(
        "/recommend", json={"user_id": 1, "k": 5, "filters": {"categories": ["drama"]}}
    ).json()
    assert [x["item_id"] for x in upper["items"]] == [x["item_id"] for x in lower["items"]]
    assert upper["items"] and all(x["item_id"] % 2 == 0 for x in upper["items"])


def test_catalog_build_from_movielens_s3rec_and_csv(data_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "ml.parquet"
    r = runner.invoke(app, ["catalog", "build", str(data_home / "ml-100k" / "u.item"), "--output", str(out)])
    assert r.exit_code == 0, r.output
    ml = pl.read_parquet(out)
    assert ml.height == 1682 and ml["item_id"].dtype == pl.Int64
    assert dict(ml.select("item_id", "category").head(2).iter_rows()) == {1: "Animation", 2: "Action"}
    beauty = data_home / "amazon-beauty" / "s3rec" / "Beauty_item2attributes.json"
    if beauty.is_file():
        r = runner.invoke(app, ["catalog", "build", str(beauty), "--output", str(tmp_path / "b.parquet")])
        assert r.exit_code == 0, r.output
        assert pl.read_parquet(tmp_path / "b.parquet")["category"].str.starts_with("attr-").all()
    src = tmp_path / "products.csv"
    src.write_text("sku,dept,in_stock,price\n10,Shoes,true,5\n11,Hats,no,7\n")
    args = ["catalog", "build", str(src), "--output", str(tmp_path / "c.csv")]
    r = runner.invoke(app, [*args, "--columns", "item_id=sku,category=dept,available=in_stock,value=price"])
    assert r.exit_code == 0, r.output
    table = pl.read_csv(tmp_path / "c.csv")
    assert table.rows() == [(10, True, "Shoes", 5.0), (11, False, "Hats", 7.0)]
    src.write_text("sku,price\n10,cheap\n")
    r = runner.invoke(app, [*args, "--columns", "item_id=sku,value=price"])
    assert r.exit_code != 0 and "row 1, column 'value': expected a number, got 'cheap'" in " ".join(
        r.output.split()
    )


def test_serve_prints_its_url(
    monkeypatch: pytest.MonkeyPatch, served: dict[str, Path], tmp_path: Path
) -> None:
    import uvicorn

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    args = ["serve", str(served["ease"]), "--port", "8123", "--state-db", str(tmp_path / "s.sqlite")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "http://127.0.0.1:8123" in r.output and "/docs" in r.output
    assert calls == [{"host": "127.0.0.1", "port": 8123, "log_level": "warning", "access_log": False}]


def test_catalog_build_errors(tmp_path: Path) -> None:
    with pytest.raises(VitrinaError, match="file not found"):
        from vitrina.data.catalogs import build_catalog

        build_catalog(tmp_path / "none.csv")
