"""Intra-list diversity: how different the items inside one list are from each other."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from vitrina.errors import DataValidationError
from vitrina.metrics._inputs import check_items, check_topk


def normalized_rows(item_vectors: np.ndarray | sp.spmatrix | sp.sparray) -> sp.csr_matrix | np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), as float64 CSR or ndarray."""
    if sp.issparse(item_vectors):
        vectors = sp.csr_matrix(item_vectors, dtype=np.float64)
        norms = np.sqrt(np.asarray(vectors.multiply(vectors).sum(axis=1)).ravel())
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        return sp.csr_matrix(sp.diags(scale) @ vectors)
    vectors = np.asarray(item_vectors, dtype=np.float64)
    if vectors.ndim != 2 or not np.isfinite(vectors).all():
        raise DataValidationError(
            f"item_vectors: expected a finite 2-d (n_items, d) array, got shape {vectors.shape}"
        )
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def intra_list_diversity_of(topk: np.ndarray, unit: sp.csr_matrix | np.ndarray) -> np.ndarray:
    """Per-user ILD of validated lists given unit-norm item rows.

    For unit vectors the pairwise cosines of a list sum to ``(|s|^2 - n_nonzero) / 2`` where ``s``
    is the sum of the list's vectors, so one sparse product over all users replaces the k x k Gram
    matrices.
    """
    n_users, n_items = topk.shape[0], unit.shape[0]
    valid = topk >= 0
    members = sp.csr_matrix(
        (np.ones(int(valid.sum())), (np.nonzero(valid)[0], topk[valid])), shape=(n_users, n_items)
    )
    summed = members @ unit
    if sp.issparse(summed):
        squared = np.asarray(summed.multiply(summed).sum(axis=1)).ravel()
    else:
        squared = np.einsum("ij,ij->i", summed, summed)
    nonzero = members @ (np.asarray(abs(unit).sum(axis=1)).ravel() > 0).astype(np.float64)
    size = valid.sum(axis=1)
    pairs = size * (size - 1) / 2
    cosine_sum = (squared - nonzero) / 2
    out = np.clip(1.0 - cosine_sum / np.maximum(pairs, 1), 0.0, 2.0)
    out[size < 2] = np.nan
    return out


def intra_list_diversity(
    topk: np.ndarray, item_vectors: np.ndarray | sp.spmatrix | sp.sparray, *, k: int | None = None
) -> np.ndarray:
    """ILD@k per user: mean cosine distance ``1 - cos(v_a, v_b)`` over pairs of recommended items.

    ``item_vectors`` (n_items x d, dense or sparse) can be attribute one-hots or embeddings. An
    all-zero vector has cosine 0 with every item (distance 1). Empty (``-1``) slots are skipped; a
    user with fewer than two filled slots gets NaN.

    >>> import numpy as np
    >>> vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> intra_list_diversity(np.array([[0, 1, 2], [0, 1, -1], [2, -1, -1]]), vectors)
    array([0.66666667, 0.        ,        nan])
    """
    cut = check_topk(topk, k)
    unit = normalized_rows(item_vectors)
    check_items(cut, unit.shape[0], "item_vectors")
    return intra_list_diversity_of(cut, unit)
