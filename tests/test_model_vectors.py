"""Models that expose query and item vectors (ALS, BPR, sequential transformers): the vectors
reproduce the scores, and ``--ann`` serving over them returns the exact top-k."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from fastapi.testclient import TestClient
from threadpoolctl import threadpool_limits

from vitrina.data.loaders import load_movielens
from vitrina.models.base import Recommender
from vitrina.models.registry import make_model
from vitrina.serving.ann import AnnIndex, EmbeddingModel
from vitrina.serving.app import create_app
from vitrina.serving.service import Settings

SMALL: dict[str, dict[str, object]] = {
    "als": {"factors": 16, "iterations": 2, "seed": 1},
    "bpr": {"factors": 16, "iterations": 2, "seed": 1},
    "esasrec": {
        "n_factors": 16,
        "n_negatives": 16,
        "max_len": 20,
        "batch_size": 256,
        "epochs": 2,
        "dropout": 0.0,
        "verbose": False,
    },
}
N_USERS = 100  # users compared through the service


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models on a shared CPU: one torch and one BLAS thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1, "blas"):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models(data_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Recommender, Path]]:
    df = load_movielens(data_home / "ml-100k" / "u.data").with_columns(weight=pl.lit(1.0))
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, params in SMALL.items():
        model = make_model(name, params).fit(df)
        out[name] = (model, model.save(root / name, name=name))
    return out


@pytest.mark.parametrize("name", list(SMALL))
def test_vectors_reproduce_scores(name: str, models: dict[str, tuple[Recommender, Path]]) -> None:
    model = models[name][0]
    assert isinstance(model, EmbeddingModel)
    items = model.item_vectors()
    assert items.shape[0] == len(model.items_) and items.dtype == np.float32
    users = np.arange(0, len(model.users_), 37)
    np.testing.assert_allclose(
        model.user_vectors(users) @ items.T, model.score_users(users), rtol=1e-5, atol=1e-6
    )
    rng = np.random.default_rng(0)
    histories = [model.user_history(int(u))[:5] for u in users[:10]]
    histories += [rng.integers(0, len(model.items_), size=n) for n in (1, 3, 60)] + [np.array([], np.int64)]
    np.testing.assert_allclose(
        model.history_vectors(histories) @ items.T, model.score_histories(histories), rtol=1e-5, atol=1e-6
    )


def _top10(client: TestClient, user_id: int) -> list[int]:
    response = client.post("/recommend", json={"user_id": user_id, "k": 10})
    assert response.status_code == 200 and not response.json()["fallback"]
    return [item["item_id"] for item in response.json()["items"]]


@pytest.mark.parametrize("name", list(SMALL))
def test_ann_serving_matches_exact(
    name: str,
    models: dict[str, tuple[Recommender, Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the catalogue (1682 items) is far below the default exact_below; force the HNSW path
    build = AnnIndex.cached.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        AnnIndex, "cached", classmethod(lambda cls, v, d, **p: build(cls, v, d, **{**p, "exact_below": 0}))
    )
    path = models[name][1]
    exact = TestClient(create_app(Settings(model_dir=path, state_db=tmp_path / "exact.sqlite")))
    ann = TestClient(create_app(Settings(model_dir=path, state_db=tmp_path / "ann.sqlite", ann=True)))
    with exact, ann:
        assert ann.app.state.vitrina["service"].default.ann.exact_below == 0  # type: ignore[attr-defined]
        overlap = [len(set(_top10(exact, u)) & set(_top10(ann, u))) / 10 for u in range(1, N_USERS + 1)]
    assert np.mean(overlap) >= 0.95
