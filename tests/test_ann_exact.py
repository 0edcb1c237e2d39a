"""``AnnIndex.exact``: the in-place scan with partial selection equals a full sort (issue 11, part 7)."""

from __future__ import annotations

import numpy as np

from vitrina.serving.ann import AnnIndex


def test_exact_equals_full_sort_with_and_without_mask() -> None:
    rng = np.random.default_rng(7)
    items = rng.normal(size=(5_000, 8)).astype(np.float32)
    index = AnnIndex(items, exact_below=0)
    allowed = rng.random(len(items)) < 0.01
    for q in rng.normal(size=(5, 8)).astype(np.float32):
        scores = items @ q
        idx, val = index.exact(q, 10)
        assert idx.tolist() == np.argsort(-scores, kind="stable")[:10].tolist()
        np.testing.assert_allclose(val, np.sort(scores)[::-1][:10], rtol=1e-6)
        idx, _ = index.exact(q, 10, allowed)
        masked = np.where(allowed, scores, -np.inf)
        assert idx.tolist() == np.argsort(-masked, kind="stable")[:10].tolist()
    few = np.zeros(len(items), dtype=bool)
    few[[3, 9]] = True  # fewer allowed items than asked for: -1 pads
    idx, val = index.exact(rng.normal(size=8), 4, few)
    assert sorted(idx[:2].tolist()) == [3, 9] and idx[2:].tolist() == [-1, -1] and np.isneginf(val[2:]).all()
