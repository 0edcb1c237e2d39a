"""Micro-batching of model calls (vitrina.serving.batching): concurrent requests share one model call
and get the answers they would get alone; one failing request does not fail the others (issue 16)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from vitrina.models.registry import make_model
from vitrina.serving.bundle import ModelBundle
from vitrina.serving.schemas import RecommendRequest
from vitrina.serving.service import Service, Settings


@pytest.fixture(scope="module")
def models(ml100k_head: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("batching")
    df = ml100k_head.head(5_000)
    seq = make_model("sasrec", {"epochs": 1, "n_factors": 16, "n_blocks": 1, "verbose": False})
    return {
        "ease": make_model("ease", {"l2": 100.0}).fit(df).save(root / "ease"),
        "sasrec": seq.fit(df).save(root / "sasrec"),
    }


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Rows per batched model call."""
    sizes: list[int] = []
    original = ModelBundle.scores_many

    def spy(self: ModelBundle, targets: Any, **times: Any) -> np.ndarray:
        sizes.append(len(targets))
        return original(self, targets, **times)

    monkeypatch.setattr(ModelBundle, "scores_many", spy)
    yield sizes


def requests() -> list[RecommendRequest]:
    """Known users, histories of different lengths (padding in a batch), both, a deny filter."""
    bodies: list[dict[str, Any]] = [
        {"user_id": 196, "k": 5},
        {"history": [50], "k": 5},
        {"history": [50, 181, 1, 7, 100, 258, 286, 9], "k": 5, "filters": {"deny_items": [1, 2, 3]}},
        {"user_id": 186, "history": [302, 50], "k": 7},
        {"user_id": 22, "k": 3, "filters": {"exclude_seen": False}},
        {"user_id": "someone-new", "k": 5},  # popularity fallback: answered without the model
    ]
    return [RecommendRequest.model_validate(b) for b in bodies]


async def _alone(service: Service, reqs: list[RecommendRequest]) -> list[Any]:
    return [await service.recommend(r) for r in reqs]


async def _together(service: Service, reqs: list[RecommendRequest]) -> list[Any]:
    return list(await asyncio.gather(*(service.recommend(r) for r in reqs)))


@pytest.mark.parametrize("name", ["ease", "sasrec"])
def test_concurrent_requests_share_one_model_call_and_match_single_calls(
    name: str, models: dict[str, Path], calls: list[int], tmp_path: Path, one_thread: None
) -> None:
    service = Service.from_settings(Settings(model_dir=models[name], state_db=tmp_path / "s.db"))
    try:
        reqs = requests()
        alone = asyncio.run(_alone(service, reqs))
        assert calls == [1] * 5  # one call each; the fallback never reaches the model
        calls.clear()
        together = asyncio.run(_together(service, reqs))
        assert calls == [5]
    finally:
        service.close()
    for a, t in zip(alone, together, strict=True):
        assert [i.item_id for i in a.items] == [i.item_id for i in t.items]
        np.testing.assert_allclose(
            [i.score for i in a.items], [i.score for i in t.items], rtol=1e-5, atol=1e-6
        )
        assert (a.fallback_reason, a.n_eligible) == (t.fallback_reason, t.n_eligible)
    assert together[2].n_eligible == alone[2].n_eligible and 1 not in [i.item_id for i in together[2].items]


def test_a_failing_request_fails_alone(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    original = ModelBundle.scores_many

    def fragile(self: ModelBundle, targets: Any, **times: Any) -> np.ndarray:
        if any(h is not None and len(h) == 3 for _, h in targets):
            raise RuntimeError("cannot score a history of 3")
        return original(self, targets, **times)

    monkeypatch.setattr(ModelBundle, "scores_many", fragile)
    service = Service.from_settings(Settings(model_dir=models["ease"], state_db=tmp_path / "s.db"))
    reqs = [RecommendRequest.model_validate({"history": h, "k": 3}) for h in ([50], [50, 181, 1], [7, 9])]

    async def run() -> list[Any]:
        return list(await asyncio.gather(*(service.recommend(r) for r in reqs), return_exceptions=True))

    try:
        first, failed, last = asyncio.run(run())
    finally:
        service.close()
    assert isinstance(failed, RuntimeError) and "history of 3" in str(failed)
    assert len(first.items) == 3 and len(last.items) == 3


def test_single_row_top_k_matches_the_batch_top_k() -> None:
    """The serving cut (argpartition on one row) keeps the contract of vitrina.models.topk:
    best first, equal scores by item index, -inf never returned (issue 16)."""
    from vitrina.models import topk
    from vitrina.serving.ranking import top_k

    rng = np.random.default_rng(0)
    # 30% -inf: the whole row is partitioned; 99.5%: only its finite entries (an ANN row)
    for n, k, dropped in [
        (1682, 10, 0.3),
        (12101, 10, 0.3),
        (50, 50, 0.3),
        (30, 100, 0.3),
        (5, 1, 0.3),
        (20000, 10, 0.995),
        (20000, 200, 0.995),
        (3000, 5, 0.999),
    ]:
        for _ in range(20):
            scores = rng.integers(0, 40, n).astype(np.float32)  # many ties
            scores[rng.random(n) < dropped] = -np.inf
            idx, val = top_k(scores, k)
            ref_idx, ref_val = topk(scores[None, :], k)
            keep = ref_idx[0] >= 0
            np.testing.assert_array_equal(val, ref_val[0][keep])
            # ties at the cut may pick different items; everything above the cut must agree
            above = val > val[-1] if len(val) else val.astype(bool)
            np.testing.assert_array_equal(idx[above], ref_idx[0][keep][above])
            assert list(idx) == sorted(idx, key=lambda i: (-scores[i], i))
    assert top_k(np.full(4, -np.inf, dtype=np.float32), 3)[0].size == 0
