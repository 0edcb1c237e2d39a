"""``item_similarity`` (issue 11, part 4: no dense items x items pass at 200k items) equals the dense
definition: top-k shrunk cosine per item, zero diagonal, equal similarities keep the lower index."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from vitrina.models import itemknn
from vitrina.models.itemknn import item_similarity


def _dense_reference(x: np.ndarray, k: int, shrinkage: float) -> np.ndarray:
    norms = np.sqrt((x * x).sum(axis=0))
    sim = (x.T @ x) / (norms[:, None] * norms[None, :] + shrinkage)
    np.fill_diagonal(sim, 0.0)
    out = np.zeros_like(sim)
    for i, row in enumerate(sim):
        order = np.lexsort((np.arange(len(row)), -row))[:k]  # best first, ties by index
        keep = order[row[order] > 0]
        out[i, keep] = row[keep]
    return out


@pytest.mark.parametrize("block_pairs", [1, 50, 1 << 22])  # one item per block up to one block
def test_sparse_top_k_equals_the_dense_definition(monkeypatch: pytest.MonkeyPatch, block_pairs: int) -> None:
    monkeypatch.setattr(itemknn, "_BLOCK_PAIRS", block_pairs)
    rng = np.random.default_rng(0)
    x = (rng.random((60, 40)) < 0.15).astype(np.float64)  # binary: many equal similarities
    x[:, 7] = 0.0  # an item nobody saw
    for k, shrinkage in [(3, 0.0), (5, 2.0), (100, 1.0)]:
        got = item_similarity(sp.csr_matrix(x), k, shrinkage)
        assert got.dtype == np.float32 and got.has_sorted_indices
        np.testing.assert_allclose(got.toarray(), _dense_reference(x, k, shrinkage), rtol=1e-6)
