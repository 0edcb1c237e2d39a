"""A loaded model plus what serving needs beside it: fast id lookups, the popularity fallback,
the catalogue aligned to its items and, for embedding models, an ANN index.

A bundle is immutable once built; a hot swap builds a new one and replaces the reference, so a
request that started on the old bundle finishes on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl

from vitrina.errors import ModelLoadError
from vitrina.models.base import Recommender, load_model
from vitrina.serving.ann import AnnIndex, EmbeddingModel
from vitrina.serving.catalog import AlignedCatalog, Catalog

#: the ANN index of a model directory, saved beside its files on first load (minutes to build at
#: 1M items, seconds to load; checked against the item vectors and its own checksums)
ANN_DIR = "ann-index"


def _lookup(ids: pl.Series) -> tuple[dict[Hashable, int], bool]:
    return dict(zip(ids.to_list(), range(len(ids)), strict=True)), ids.dtype.is_integer()


def _normalise(value: Any, integer: bool) -> Any:
    """Request ids arrive as JSON ints or strings; map them onto the model's id type."""
    if integer:
        if isinstance(value, str):
            value = value.strip()
            digits = value.removeprefix("-")
            return int(value) if digits.isascii() and digits.isdigit() and len(digits) < 20 else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    return str(value)


@dataclass(frozen=True, eq=False)
class ModelBundle:
    """One servable model (immutable)."""

    model: Recommender
    version: str
    item_ids: list[Any]
    item_index: dict[Hashable, int]
    user_index: dict[Hashable, int]
    int_items: bool
    int_users: bool
    popularity: np.ndarray
    catalog: AlignedCatalog | None
    ann: AnnIndex | None

    @classmethod
    def from_model(
        cls,
        model: Recommender,
        *,
        version: str,
        catalog: Catalog | None = None,
        ann: bool = False,
        ann_dir: Path | None = None,
    ) -> ModelBundle:
        """``ann_dir``: where the ANN index is saved and reused (None: built, never saved)."""
        item_index, int_items = _lookup(model.items_.external_ids)
        user_index, int_users = _lookup(model.users_.external_ids)
        ann_index = None
        if ann:
            if not isinstance(model, EmbeddingModel):
                raise ModelLoadError(
                    f"--ann needs a model with item_vectors, user_vectors and history_vectors; "
                    f"{type(model).__name__} has none"
                )
            ann_index = AnnIndex.cached(model.item_vectors(), ann_dir)
        return cls(
            model=model,
            version=version,
            item_ids=model.items_.external_ids.to_list(),
            item_index=item_index,
            user_index=user_index,
            int_items=int_items,
            int_users=int_users,
            popularity=np.asarray(model.seen_.sum(axis=0), dtype=np.float32).ravel(),
            catalog=catalog.align(model.items_) if catalog is not None else None,
            ann=ann_index,
        )

    @classmethod
    def load(cls, path: str | Path, *, catalog: Catalog | None = None, ann: bool = False) -> ModelBundle:
        """Load a saved model directory; :class:`ModelLoadError` if it is corrupt or tampered with."""
        path = Path(path)
        model = load_model(path)
        try:
            digest = hashlib.sha256((path / "config.json").read_bytes()).hexdigest()[:12]
            return cls.from_model(
                model, version=f"{path.name}@{digest}", catalog=catalog, ann=ann, ann_dir=path / ANN_DIR
            )
        except ModelLoadError:
            raise
        except Exception as exc:  # the catalogue or the ANN index does not fit this model
            raise ModelLoadError(f"{path}: cannot serve this model ({type(exc).__name__}: {exc})") from exc

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def item_idx(self, item_id: Any) -> int:
        """Internal index of an external item id, -1 if unknown."""
        return self.item_index.get(_normalise(item_id, self.int_items), -1)

    def user_idx(self, user_id: Any) -> int:
        return self.user_index.get(_normalise(user_id, self.int_users), -1)

    def seen_of(self, user: int) -> np.ndarray:
        """The user's training items, oldest first: sequential models need the order."""
        return self.model.user_history(user)

    def scores(
        self,
        user: int,
        history: np.ndarray | None,
        allowed: np.ndarray,
        n_candidates: int,
        times: np.ndarray | None = None,
        request: int | None = None,
    ) -> np.ndarray:
        """Scores over all items for a known user (``history is None``) or a history (with its
        event ``times`` and the ``request`` time, read by models that use time).

        Entries outside ``allowed`` may be anything (the caller masks them). With an ANN index only
        ``n_candidates`` allowed items are scored, exactly; the
        rest are -inf.
        """
        model = self.model
        if self.ann is not None:
            emb = cast(EmbeddingModel, model)
            if history is None:
                query = emb.user_vectors(np.array([user]))
            elif times is not None:  # a model that reads time (a sequential one): its query sees the times
                query = model.history_vectors([history], [times], [request])  # type: ignore[attr-defined]
            else:
                query = emb.history_vectors([history])
            # masked-out seen items are among the nearest neighbours (models score them highest): the
            # index widens its fetch until n_candidates allowed items survive, or scans exactly
            idx, val = self.ann.search(query[0], n_candidates, allowed)
            out = np.full(self.n_items, -np.inf, dtype=np.float32)
            out[idx[idx >= 0]] = val[idx >= 0]
            return out
        # The whole row (a fresh float32 copy): serving re-ranks by expected value or distance
        # before the cut (see docs/serving.md).
        if history is None:
            return model.score_users(np.array([user], dtype=np.int64))[0]
        return model.score_histories([history], None if times is None else [times], [request])[0]

    def scores_many(
        self,
        targets: Sequence[tuple[int, np.ndarray | None]],
        times: Sequence[np.ndarray | None] | None = None,
        requests: Sequence[int | None] | None = None,
    ) -> np.ndarray:
        """Scores (len(targets) x n_items, float32) for ``(user, history)`` pairs in at most two model
        calls (one for histories, one for known users); exact scoring, no ANN index. ``times`` and
        ``requests`` (aligned with ``targets``) reach models that read time."""
        out = np.empty((len(targets), self.n_items), dtype=np.float32)
        hist = [i for i, (_, h) in enumerate(targets) if h is not None]
        users = [i for i, (_, h) in enumerate(targets) if h is None]
        if hist:
            histories = [h for _, h in targets if h is not None]
            timed = [t for i in hist if times is not None and (t := times[i]) is not None]
            asked = [requests[i] for i in hist] if requests is not None else None
            out[hist] = self.model.score_histories(
                histories, timed if len(timed) == len(hist) else None, asked
            )
        if users:
            out[users] = self.model.score_users(np.array([targets[i][0] for i in users], dtype=np.int64))
        return out
