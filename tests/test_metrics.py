"""Hand-computed values, input checks, sklearn agreement and doctests for ``vitrina.metrics``."""

from __future__ import annotations

import doctest
import importlib
import math

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import ndcg_score

from vitrina.errors import ConfigError, DataValidationError
from vitrina.metrics import (
    average_popularity,
    average_precision,
    compute_metrics,
    coverage,
    hit_rate,
    intra_list_diversity,
    mrr,
    ndcg,
    novelty,
    precision,
    recall,
    serendipity,
)

ACCURACY = {
    "hr": hit_rate,
    "recall": recall,
    "precision": precision,
    "ndcg": ndcg,
    "mrr": mrr,
    "map": average_precision,
}
MODULES = [
    "_average_precision",
    "_compute",
    "_coverage",
    "_diversity",
    "_hit_rate",
    "_mrr",
    "_ndcg",
    "_popularity",
    "_precision",
    "_recall",
    "_serendipity",
]


def truth_of(relevant: list[list[int]], n_items: int) -> sp.csr_matrix:
    """Binary truth matrix with ``relevant[u]`` as user ``u``'s relevant items."""
    rows = [u for u, items in enumerate(relevant) for _ in items]
    cols = [i for items in relevant for i in items]
    return sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(relevant), n_items))


def accuracy(topk: list[list[int]], relevant: list[list[int]], n_items: int, k: int | None = None) -> dict:
    """Every accuracy metric's per-user array for small literal inputs."""
    lists, truth = np.array(topk), truth_of(relevant, n_items)
    return {name: fn(lists, truth, k=k) for name, fn in ACCURACY.items()}


def test_perfect_list_scores_one_everywhere() -> None:
    values = accuracy([[2, 0, 1]], [[0, 1, 2]], 5)
    assert {name: v.tolist() for name, v in values.items()} == {name: [1.0] for name in ACCURACY}


def test_list_without_hits_scores_zero_everywhere() -> None:
    values = accuracy([[3, 4, 1]], [[0, 2]], 5)
    assert {name: v.tolist() for name, v in values.items()} == {name: [0.0] for name in ACCURACY}


def test_empty_list_scores_zero_and_has_no_beyond_accuracy_value() -> None:
    topk = np.array([[-1, -1, -1]])
    values = accuracy(topk.tolist(), [[0]], 3)
    assert {name: v.tolist() for name, v in values.items()} == {name: [0.0] for name in ACCURACY}
    assert coverage(topk, 3) == 0.0
    assert np.isnan(novelty(topk, np.array([1, 1, 1]), 2)).all()
    assert np.isnan(average_popularity(topk, np.array([1, 1, 1]))).all()
    assert np.isnan(intra_list_diversity(topk, np.eye(3))).all()


def test_partial_list_with_several_relevant_items() -> None:
    # hits at ranks 2 and 4 out of 4; three relevant items
    values = accuracy([[5, 1, 7, 3]], [[1, 3, 9]], 10)
    assert values["hr"][0] == 1.0
    assert values["recall"][0] == 2 / 3
    assert values["precision"][0] == 0.5
    assert values["mrr"][0] == 0.5
    assert values["map"][0] == pytest.approx((1 / 2 + 2 / 4) / 3, abs=1e-15)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert values["ndcg"][0] == pytest.approx(dcg / idcg, abs=1e-15)


def test_padding_keeps_k_for_precision_and_never_hits() -> None:
    values = accuracy([[1, -1, -1]], [[1]], 4)
    assert values["precision"][0] == 1 / 3
    assert [values[name][0] for name in ("hr", "recall", "ndcg", "mrr", "map")] == [1.0] * 5


def test_padding_does_not_match_previous_users_last_item() -> None:
    # (user 1, item -1) must not be mistaken for (user 0, item n_items - 1)
    values = accuracy([[3], [-1]], [[3], [0]], 4)
    assert values["hr"].tolist() == [1.0, 0.0]


def test_more_relevant_items_than_k() -> None:
    values = accuracy([[0, 1]], [[0, 1, 2, 3]], 5)
    assert values["recall"][0] == 0.5
    assert [values[name][0] for name in ("hr", "precision", "ndcg", "mrr", "map")] == [1.0] * 5


def test_cut_at_k_ignores_later_slots() -> None:
    values = accuracy([[4, 0, 1], [0, 4, 1]], [[0], [0]], 5, k=1)
    assert values["hr"].tolist() == [0.0, 1.0]
    assert values["precision"].tolist() == [0.0, 1.0]


def test_users_without_relevant_items_are_nan() -> None:
    # stored zero and negative values are not relevant
    truth = sp.csr_matrix(
        (np.array([1.0, -1.0, 0.0]), np.array([1, 0, 2]), np.array([0, 1, 3])), shape=(2, 3)
    )
    first = {"hr": 1.0, "recall": 1.0, "precision": 0.5, "ndcg": 1.0, "mrr": 1.0, "map": 1.0}
    for name, fn in ACCURACY.items():
        values = fn(np.array([[1, 0], [0, 2]]), truth)
        assert values[0] == first[name]
        assert np.isnan(values[1])


def test_graded_truth_counts_as_binary() -> None:
    truth = sp.csr_matrix(np.array([[3.0, 0.0, 0.5]]))
    assert ndcg(np.array([[2, 0]]), truth)[0] == 1.0


def test_coverage_counts_distinct_items() -> None:
    topk = np.array([[2, 0, 1], [4, 3, -1], [0, 1, 2]])
    assert coverage(topk, 10) == 0.5
    assert coverage(topk, 10, k=1) == 0.3


def test_novelty_and_arp_hand_values() -> None:
    topk = np.array([[0, 1], [2, -1], [1, 2]])
    pop = np.array([8, 2, 0])
    assert novelty(topk, pop, 8).tolist() == [1.0, 3.0, 2.5]
    assert average_popularity(topk, pop).tolist() == [5.0, 0.0, 1.0]
    assert average_popularity(topk, pop, k=1).tolist() == [8.0, 0.0, 2.0]


@pytest.mark.parametrize("to_matrix", [np.asarray, sp.csr_matrix], ids=["dense", "sparse"])
def test_ild_hand_values(to_matrix) -> None:
    vectors = to_matrix(np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]))
    topk = np.array([[0, 1, -1], [0, 2, -1], [0, 3, -1], [0, 4, -1], [0, 1, 2], [0, 5, -1], [5, -1, -1]])
    expected = [0.0, 1.0, 2.0, 1.0, 2 / 3, 1 - 1 / math.sqrt(2), math.nan]
    assert intra_list_diversity(topk, vectors) == pytest.approx(expected, abs=1e-12, nan_ok=True)


def test_serendipity_hand_values() -> None:
    topk = np.array([[2, 0, 1], [4, 3, -1], [0, 1, 2]])
    truth = truth_of([[0, 2, 3], [4], []], 5)
    expected = np.array([[0, 1], [4, -1], [0, 1]])
    assert serendipity(topk, truth, expected) == pytest.approx([1 / 3, 0.0, math.nan], nan_ok=True)
    assert serendipity(topk, truth, np.full((3, 1), -1)) == pytest.approx(
        [2 / 3, 1 / 3, math.nan], nan_ok=True
    )


def test_compute_metrics_keys_and_population() -> None:
    topk = np.array([[2, 0, 1], [4, 3, -1], [0, 1, 5]])
    truth = truth_of([[0, 3], [2], []], 6)
    pop = np.array([4, 3, 2, 1, 0, 4])
    vectors = np.eye(6)
    expected = np.array([[0, 1]] * 3)
    out = compute_metrics(
        topk, truth, k=3, item_popularity=pop, n_train_users=4, item_vectors=vectors, expected=expected
    )
    keys = ["ndcg", "hr", "recall", "precision", "mrr", "map", "coverage", "novelty", "arp", "ild"]
    assert list(out) == [f"{name}@3" for name in [*keys, "serendipity"]] + ["n_users_evaluated"]
    assert out["n_users_evaluated"] == 2
    assert out["hr@3"] == 0.5
    assert out["recall@3"] == 0.25
    assert out["precision@3"] == 1 / 6
    assert out["mrr@3"] == 0.25
    assert out["map@3"] == 0.125
    assert out["coverage@3"] == 5 / 6  # user 2 is not evaluated: item 5 does not count
    assert out["arp@3"] == (9 / 3 + 1 / 2) / 2
    assert out["novelty@3"] == pytest.approx(np.mean([np.mean([1, 0, 2 - math.log2(3)]), 2.0]), abs=1e-15)
    assert out["ild@3"] == 1.0
    assert out["serendipity@3"] == 0.0  # the one hit (item 0) is expected
    for name, fn in ACCURACY.items():
        assert out[f"{name}@3"] == np.nanmean(fn(topk, truth))


def test_compute_metrics_minimal_keys_and_cut() -> None:
    topk = np.array([[4, 0, 1]])
    out = compute_metrics(topk, truth_of([[0]], 5), k=1)
    assert out == {
        "ndcg@1": 0.0,
        "hr@1": 0.0,
        "recall@1": 0.0,
        "precision@1": 0.0,
        "mrr@1": 0.0,
        "map@1": 0.0,
        "coverage@1": 0.2,
        "n_users_evaluated": 1,
    }


def test_compute_metrics_without_evaluated_users_is_nan() -> None:
    out = compute_metrics(np.array([[0, 1]]), sp.csr_matrix((1, 3)), k=2, item_vectors=np.eye(3))
    assert out["n_users_evaluated"] == 0
    assert all(math.isnan(v) for key, v in out.items() if key not in {"n_users_evaluated", "coverage@2"})
    assert out["coverage@2"] == 0.0


def test_compute_metrics_needs_popularity_and_user_count_together() -> None:
    with pytest.raises(ConfigError, match="n_train_users"):
        compute_metrics(np.array([[0]]), truth_of([[0]], 2), k=1, item_popularity=np.array([1, 1]))


@pytest.mark.parametrize(
    ("topk", "error", "match"),
    [
        (np.array([[0, 0]]), DataValidationError, "twice"),
        (np.array([[0, -2]]), DataValidationError, "-1 for an empty slot"),
        (np.array([[0, 3]]), DataValidationError, "out of range"),
        (np.array([[0.0, 1.0]]), DataValidationError, "integer"),
        (np.array([0, 1]), DataValidationError, "2-d"),
    ],
)
def test_bad_topk_raises(topk: np.ndarray, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ndcg(topk, truth_of([[0]], 3))


@pytest.mark.parametrize("k", [0, 3])
def test_bad_k_raises(k: int) -> None:
    with pytest.raises(ConfigError, match="k: got"):
        recall(np.array([[0, 1]]), truth_of([[0]], 3), k=k)


def test_bad_truth_raises() -> None:
    with pytest.raises(DataValidationError, match="rows"):
        hit_rate(np.array([[0, 1]]), truth_of([[0], [1]], 3))
    with pytest.raises(DataValidationError, match="scipy sparse"):
        hit_rate(np.array([[0, 1]]), np.array([[1, 0, 0]]))


def test_bad_popularity_and_expected_raise() -> None:
    with pytest.raises(DataValidationError, match="exceeds n_users"):
        novelty(np.array([[0]]), np.array([5, 1]), 2)
    with pytest.raises(DataValidationError, match="non-negative"):
        average_popularity(np.array([[0]]), np.array([-1, 1]))
    with pytest.raises(DataValidationError, match="out of range"):
        average_popularity(np.array([[2]]), np.array([1, 1]))
    with pytest.raises(DataValidationError, match="expected"):
        serendipity(np.array([[0]]), truth_of([[0]], 2), np.array([[0], [1]]))
    with pytest.raises(DataValidationError, match="expected"):
        serendipity(np.array([[0]]), truth_of([[0]], 2), np.array([[2]]))


def test_ndcg_matches_sklearn() -> None:
    rng = np.random.default_rng(7)
    n_users, n_items, k = 150, 30, 6
    topk = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :k]
    graded = rng.integers(0, 4, size=(n_users, n_items)) * (rng.random((n_users, n_items)) < 0.15)
    graded[0] = 0  # one user without relevant items
    truth = sp.csr_matrix(graded)
    # listed items score k..1 in order, the rest 0, so sklearn's top k is exactly our list
    scores = np.zeros((n_users, n_items))
    np.put_along_axis(scores, topk, np.arange(k, 0, -1, dtype=float), axis=1)
    relevant = (graded > 0).astype(float)
    ours = ndcg(topk, truth)
    keep = relevant.sum(axis=1) > 0
    for u in np.flatnonzero(keep):
        assert ours[u] == pytest.approx(ndcg_score(relevant[[u]], scores[[u]], k=k), abs=1e-12)
    assert np.nanmean(ours) == pytest.approx(ndcg_score(relevant[keep], scores[keep], k=k), abs=1e-12)
    assert compute_metrics(topk, truth, k=k)[f"ndcg@{k}"] == pytest.approx(np.nanmean(ours), abs=1e-15)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"vitrina.metrics.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
