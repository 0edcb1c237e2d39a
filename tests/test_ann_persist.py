"""A saved ANN index is reused only for the vectors and parameters it was built with, and serves the
same lists as the index it was saved from; ``vitrina serve --ann`` saves it beside the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from vitrina.models.implicit_mf import ALS
from vitrina.serving.ann import AnnIndex
from vitrina.serving.bundle import ANN_DIR, ModelBundle


def _vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 8))
    return (v * rng.lognormal(0.0, 1.0, size=(n, 1))).astype(np.float32)


@pytest.fixture(scope="module")
def built() -> AnnIndex:
    return AnnIndex(_vectors(3_000, 0), exact_below=300, expansion_search=64, threads=1)


def test_saved_index_serves_the_same_lists(built: AnnIndex, tmp_path: Path) -> None:
    built.save(tmp_path / "ix")
    loaded = AnnIndex.load(tmp_path / "ix", built.vectors)
    assert loaded.bands == built.bands and loaded.expansion_search == 64
    assert [g is None for g in loaded.graphs] == [g is None for g in built.graphs]
    rng = np.random.default_rng(1)
    for q in rng.normal(size=(20, 8)).astype(np.float32):
        allowed = rng.random(len(built)) < 0.5
        for mask in (None, allowed):
            a, b = built.search(q, 10, mask), loaded.search(q, 10, mask)
            assert a[0].tolist() == b[0].tolist()
            np.testing.assert_array_equal(a[1], b[1])


def test_a_saved_index_is_refused_for_other_vectors_or_altered_files(built: AnnIndex, tmp_path: Path) -> None:
    built.save(tmp_path / "ix")
    other = built.vectors.copy()
    other[7] *= 1.01
    with pytest.raises(ValueError, match="other item vectors"):
        AnnIndex.load(tmp_path / "ix", other)
    graph = next(tmp_path.joinpath("ix").glob("band-*.usearch"))
    raw = bytearray(graph.read_bytes())
    raw[-1] ^= 1
    graph.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum mismatch"):
        AnnIndex.load(tmp_path / "ix", built.vectors)


def test_cached_reuses_only_a_matching_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vectors = _vectors(2_000, 2)
    first = AnnIndex.cached(vectors, tmp_path / "ix", exact_below=300, threads=1)
    assert (tmp_path / "ix" / "manifest.json").is_file()
    builds: list[int] = []
    init = AnnIndex.__init__

    def counting(self: AnnIndex, *args: object, **kwargs: object) -> None:
        builds.append(1)
        init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(AnnIndex, "__init__", counting)
    again = AnnIndex.cached(vectors, tmp_path / "ix", exact_below=300, expansion_search=32, threads=1)
    assert not builds and again.expansion_search == 32  # loaded, not built; search width is free
    q = vectors[0]
    assert again.search(q, 10)[0].tolist() == first.search(q, 10)[0].tolist()
    AnnIndex.cached(vectors, tmp_path / "ix", exact_below=400, threads=1)  # another head: rebuilt
    assert len(builds) == 1
    AnnIndex.cached(vectors * 2, tmp_path / "ix", exact_below=400, threads=1)  # other vectors: rebuilt
    assert len(builds) == 2
    assert AnnIndex.load(tmp_path / "ix", vectors * 2).params["exact_below"] == 400  # the last one saved


def test_served_bundle_saves_its_index_beside_the_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    log = pl.DataFrame(
        {
            "user_id": rng.integers(0, 200, 4_000),
            "item_id": rng.integers(0, 500, 4_000),
            "timestamp": np.arange(4_000),
            "weight": np.ones(4_000),
        }
    )
    ALS(factors=8, iterations=2).fit(log).save(tmp_path / "als")
    bundle = ModelBundle.load(tmp_path / "als", ann=True)
    assert bundle.ann is not None and (tmp_path / "als" / ANN_DIR / "manifest.json").is_file()
    again = ModelBundle.load(tmp_path / "als", ann=True)  # the model still loads beside its index
    assert again.ann is not None and again.ann.bands == bundle.ann.bands
