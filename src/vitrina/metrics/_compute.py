"""``compute_metrics``: every metric at one cut-off, averaged over the users that can be evaluated."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from vitrina.errors import ConfigError
from vitrina.metrics._average_precision import average_precision_from_hits
from vitrina.metrics._coverage import coverage_of
from vitrina.metrics._diversity import intra_list_diversity_of, normalized_rows
from vitrina.metrics._hit_rate import hit_rate_from_hits
from vitrina.metrics._inputs import check_items, check_topk, hit_matrix, n_relevant, relevant_matrix
from vitrina.metrics._mrr import mrr_from_hits
from vitrina.metrics._ndcg import ndcg_from_hits
from vitrina.metrics._popularity import check_popularity, novelty_of, slot_mean
from vitrina.metrics._precision import precision_from_hits
from vitrina.metrics._recall import recall_from_hits
from vitrina.metrics._serendipity import check_expected, serendipity_from_hits

_ACCURACY = {
    "ndcg": ndcg_from_hits,
    "hr": hit_rate_from_hits,
    "recall": recall_from_hits,
    "precision": precision_from_hits,
    "mrr": mrr_from_hits,
    "map": average_precision_from_hits,
}


def _mean(values: np.ndarray) -> float:
    """Mean of the non-NaN entries; NaN (without a warning) when there are none."""
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else float("nan")


def compute_metrics(
    topk: np.ndarray,
    truth: sp.spmatrix | sp.sparray,
    *,
    k: int,
    item_popularity: np.ndarray | None = None,
    n_train_users: int | None = None,
    item_vectors: np.ndarray | sp.spmatrix | sp.sparray | None = None,
    expected: np.ndarray | None = None,
    n_items: int | None = None,
) -> dict[str, float]:
    """All metrics at cut-off ``k`` as ``{"ndcg@10": ..., "n_users_evaluated": ...}``.

    Only users with at least one relevant item are evaluated, for every metric (coverage, novelty,
    ARP and ILD included), so all values describe the same population; ``n_users_evaluated``
    counts them. Per-user values undefined for an evaluated user (ILD with fewer than two items,
    novelty/ARP with an empty list) are skipped in the mean. Novelty and ARP need
    ``item_popularity`` and ``n_train_users`` together; ILD needs ``item_vectors``; serendipity
    needs ``expected``. Coverage divides by ``n_items``, the catalogue size (default: the columns
    of ``truth``; pass it when ``truth`` has extra columns, e.g. for test items unknown to
    training). Values are not rounded.

    >>> import numpy as np, scipy.sparse as sp
    >>> topk = np.array([[2, 0, 1], [4, 3, -1], [0, 1, 2]])
    >>> truth = sp.csr_matrix(np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]))
    >>> metrics = compute_metrics(topk, truth, k=2)
    >>> list(metrics)
    ['ndcg@2', 'hr@2', 'recall@2', 'precision@2', 'mrr@2', 'map@2', 'coverage@2', 'n_users_evaluated']
    >>> metrics["hr@2"], metrics["recall@2"], metrics["map@2"], metrics["coverage@2"]
    (0.5, 0.25, 0.125, 0.8)
    """
    values, coverage, n_evaluated = _per_user(
        topk, truth, k, item_popularity, n_train_users, item_vectors, expected, n_items
    )
    names = list(values)  # the accuracy metrics first, then coverage, then the others
    out = {name: _mean(values[name]) for name in names[: len(_ACCURACY)]}
    out[f"coverage@{k}"] = coverage
    out.update({name: _mean(values[name]) for name in names[len(_ACCURACY) :]})
    out["n_users_evaluated"] = n_evaluated
    return out


def per_user_metrics(
    topk: np.ndarray,
    truth: sp.spmatrix | sp.sparray,
    *,
    k: int,
    item_popularity: np.ndarray | None = None,
    n_train_users: int | None = None,
    item_vectors: np.ndarray | sp.spmatrix | sp.sparray | None = None,
    expected: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The per-user values behind :func:`compute_metrics` (all but coverage, a catalogue-level
    metric), one entry per evaluated user (a user with a relevant item), NaN where undefined;
    their NaN-skipping means are :func:`compute_metrics`'s values. For confidence intervals.

    >>> import numpy as np, scipy.sparse as sp
    >>> topk = np.array([[2, 0, 1], [4, 3, -1], [0, 1, 2]])
    >>> truth = sp.csr_matrix(np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]))
    >>> per_user_metrics(topk, truth, k=2)["hr@2"]
    array([1., 0.])
    """
    return _per_user(topk, truth, k, item_popularity, n_train_users, item_vectors, expected, None)[0]


def _per_user(
    topk: np.ndarray,
    truth: sp.spmatrix | sp.sparray,
    k: int,
    item_popularity: np.ndarray | None,
    n_train_users: int | None,
    item_vectors: np.ndarray | sp.spmatrix | sp.sparray | None,
    expected: np.ndarray | None,
    n_items: int | None,
) -> tuple[dict[str, np.ndarray], float, int]:
    """Per-user values of evaluated users (accuracy metrics first), coverage, and their number."""
    if (item_popularity is None) != (n_train_users is None):
        raise ConfigError(
            "item_popularity and n_train_users: pass both (novelty and ARP need them) or neither; got "
            f"item_popularity={'set' if item_popularity is not None else None}, n_train_users={n_train_users}"
        )
    cut = check_topk(topk, k)
    rel = relevant_matrix(truth, cut.shape[0])
    n_columns = rel.shape[1]
    n_rel = n_relevant(rel)
    evaluated = n_rel > 0
    hits = hit_matrix(cut, rel)[evaluated]
    n_rel = n_rel[evaluated]
    lists = cut[evaluated]
    out = {f"{name}@{k}": np.asarray(fn(hits, n_rel), dtype=np.float64) for name, fn in _ACCURACY.items()}
    coverage = coverage_of(lists, n_columns if n_items is None else n_items)
    if item_popularity is not None and n_train_users is not None:
        pop = check_popularity(item_popularity, n_train_users)
        check_items(cut, pop.size, "item_popularity")
        out[f"novelty@{k}"] = novelty_of(lists, pop, n_train_users)
        out[f"arp@{k}"] = slot_mean(pop, lists)
    if item_vectors is not None:
        unit = normalized_rows(item_vectors)
        check_items(cut, unit.shape[0], "item_vectors")
        out[f"ild@{k}"] = intra_list_diversity_of(lists, unit)
    if expected is not None:
        obvious = check_expected(expected, cut.shape[0], n_columns)[evaluated]
        out[f"serendipity@{k}"] = serendipity_from_hits(hits, n_rel, lists, obvious, n_columns)
    return out, coverage, int(evaluated.sum())
