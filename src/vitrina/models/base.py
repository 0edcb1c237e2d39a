"""The one interface every vitrina model follows.

Public ``fit``/``recommend`` own validation, id mapping and filtering; a model implements only
``_fit`` (learn from a :class:`Dataset`) and ``_score_users`` (a dense block of scores), plus
``_score_histories`` if it can score an ad-hoc history given at call time (serving needs it).
Filters (seen items, allow/deny lists) are applied to the scores *before* the top-k cut.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from vitrina import __version__
from vitrina.data.columns import ITEM, USER
from vitrina.data.dataset import Dataset
from vitrina.data.idmap import IdMap
from vitrina.errors import ConfigError, DataValidationError, ModelLoadError, NotFittedError
from vitrina.models._common import history_matrix
from vitrina.models._topk import GROUP, filter_scores, topk_tensor

SCHEMA_VERSION = 1
_MAX_BLOCK = 1 << 24  # floats per score block (64 MB): bounds memory for large catalogues


class Recommender(ABC):
    """Base class: constructor stores hyper-parameters, ``fit`` learns, ``recommend`` ranks."""

    #: whether ``recommend_for_history`` works (the model can score a history given at call time)
    supports_history: ClassVar[bool] = False
    #: whether ``fit`` uses a validation set (early stopping); the benchmark then trains on the
    #: train part only and ranks test users from their train + validation histories
    uses_validation: ClassVar[bool] = False
    #: whether a one-item history's scores mean item-item similarity (not so for popularity)
    item_to_item: ClassVar[bool] = True

    @property
    def uses_time(self) -> bool:
        """Whether the model reads event times (then it needs data with real timestamps)."""
        return False

    users_: IdMap
    items_: IdMap
    seen_: sp.csr_matrix
    history_indptr_: np.ndarray  # user u's chronological items: history_items_[indptr[u]:indptr[u + 1]]
    history_items_: np.ndarray

    # ----------------------------------------------------------------- learning
    def fit(self, data: Dataset | pl.DataFrame, *, validation: pl.DataFrame | None = None) -> Self:
        """Learn from interactions (a validated table or a :class:`Dataset`).

        ``validation`` (held-out events, e.g. each user's second-to-last) is used by models with
        ``uses_validation`` for early stopping; its users and items unknown to ``data`` are dropped.
        """
        dataset = data if isinstance(data, Dataset) else Dataset.from_interactions(data)
        if dataset.interactions.height == 0:
            raise DataValidationError(
                f"{type(self).__name__}.fit: no interactions to learn from (the table is empty)"
            )
        val = None
        if validation is not None and self.uses_validation:
            val = dataset.subset(validation)
        trained = self._fit(dataset, val) or dataset
        self.users_, self.items_, self.seen_ = trained.users, trained.items, trained.seen
        self.history_indptr_, self.history_items_ = trained.sequence_indptr, trained.item_idx.astype(np.int64)
        return self

    @abstractmethod
    def _fit(self, data: Dataset, validation: Dataset | None) -> Dataset | None:
        """Learn from ``data``; return the dataset finally trained on when that is not ``data``
        (a model that refits on train + validation), so the saved histories include it."""

    @abstractmethod
    def _score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """Scores (len(user_idx) x n_items, float32, higher is better) for known users."""

    def _score_histories(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Scores (len(histories) x n_items) for chronological item-index histories."""
        raise ConfigError(f"{type(self).__name__} cannot score ad-hoc histories (supports_history=False)")

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """Raw scores (len(user_idx) x n_items, float32, no filters) for internal user indices;
        for re-ranking that needs the whole row, e.g. expected value in serving."""
        self._check_fitted()
        return np.array(self._score_users(np.asarray(user_idx, dtype=np.int64)), dtype=np.float32, copy=True)

    def score_histories(
        self,
        histories: Sequence[np.ndarray],
        times: Sequence[np.ndarray] | None = None,
        requests: Sequence[int | None] | None = None,
    ) -> np.ndarray:
        """Raw scores (len(histories) x n_items, float32, no filters) for item-index histories.

        ``times`` (each history's event times, Unix seconds) and ``requests`` (each request's time)
        reach only models that read time (``uses_time``), as in :meth:`recommend_histories_indices`."""
        self._check_fitted()
        if not self.supports_history:
            raise ConfigError(f"{type(self).__name__} cannot score ad-hoc histories (supports_history=False)")
        when = (times, requests) if self.uses_time and times is not None else ()
        return np.array(self._score_histories(histories, *when), dtype=np.float32, copy=True)

    def user_history(self, user: int) -> np.ndarray:
        """Internal item indices of a known user's training events, oldest first (repeats kept)."""
        self._check_fitted()
        return self.history_items_[self.history_indptr_[user] : self.history_indptr_[user + 1]]

    def user_history_times(self, user: int) -> np.ndarray | None:
        """Event times (Unix seconds) of :meth:`user_history`, for models that keep them (those that
        read time); ``None`` for the others."""
        return None

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "seen_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(interactions) first")

    # ----------------------------------------------------------------- ranking
    def _block_rows(self) -> int:
        return max(1, _MAX_BLOCK // max(1, len(self.items_)))

    def _item_matrix(self) -> np.ndarray | None:
        """Item vectors (n_items x d, float32) for models whose score is ``query · item``; with
        ``_user_queries`` and ``_history_queries`` it lets ranking run as one matmul per block
        into a reused buffer. ``None`` (the default): ranking calls ``_score_users``."""
        return None

    def _user_queries(self, user_idx: np.ndarray) -> np.ndarray:
        """Query vectors (len(user_idx) x d) of known users, for models with ``_item_matrix``."""
        raise NotImplementedError

    def _history_queries(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Query vectors (len(histories) x d) of item-index histories, for models with ``_item_matrix``."""
        raise NotImplementedError

    def recommend_indices(
        self,
        user_idx: np.ndarray,
        k: int,
        *,
        exclude_seen: bool = True,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores for internal user indices, in bounded-memory batches.

        ``allowed`` is a boolean mask over items (False = never recommend). Slots that no
        eligible item fills hold index -1 and score -inf.
        """
        self._check_fitted()
        user_idx = np.asarray(user_idx, dtype=np.int64)
        return self._rank(
            len(user_idx),
            k,
            lambda a, b: self._user_queries(user_idx[a:b]),
            lambda a, b: self._score_users(user_idx[a:b]),
            (lambda a, b: self.seen_[user_idx[a:b]]) if exclude_seen else None,
            allowed,
        )

    def recommend_histories_indices(
        self,
        histories: Sequence[np.ndarray],
        k: int,
        *,
        exclude_seen: bool = True,
        allowed: np.ndarray | None = None,
        times: Sequence[np.ndarray] | None = None,
        requests: Sequence[int | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k for chronological item-index histories (unknown items already removed), batched.

        ``times`` (each history's event times) and ``requests`` (each request's time) reach only
        models that read time (``uses_time``); other models ignore them."""
        self._check_fitted()
        n_items = len(self.items_)
        timed = self.uses_time and times is not None

        def when(a: int, b: int) -> tuple[Any, ...]:
            # times reach only models that read them; the others keep their one-argument signature
            if not timed:
                return ()
            assert times is not None
            return (times[a:b], requests[a:b] if requests else None)

        return self._rank(
            len(histories),
            k,
            lambda a, b: self._history_queries(list(histories[a:b]), *when(a, b)),
            lambda a, b: self._score_histories(list(histories[a:b]), *when(a, b)),
            (lambda a, b: history_matrix(list(histories[a:b]), n_items)) if exclude_seen else None,
            allowed,
        )

    def _rank(
        self,
        n: int,
        k: int,
        queries: Callable[[int, int], np.ndarray],
        scores: Callable[[int, int], np.ndarray],
        seen: Callable[[int, int], sp.csr_matrix] | None,
        allowed: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``[a, b)`` scored block by block (a matmul into one reused buffer where the model
        has item vectors), filtered in place, cut to the top ``k``."""
        out_idx = np.empty((n, k), dtype=np.int64)
        out_val = np.empty((n, k), dtype=np.float32)
        items = self._item_matrix()
        step = self._block_rows()
        allowed_t = None if allowed is None else torch.from_numpy(np.asarray(allowed, dtype=bool))
        if items is not None:
            n_items = items.shape[0]
            # zero rows up to whole groups of the top-k: the buffer's groups stay contiguous
            padded = -(-n_items // GROUP) * GROUP
            items_t = torch.zeros((padded, items.shape[1]), dtype=torch.float32)
            items_t[:n_items] = torch.from_numpy(np.asarray(items, dtype=np.float32))
            if allowed_t is not None:
                allowed_t = torch.cat([allowed_t, torch.zeros(padded - n_items, dtype=torch.bool)])
            items_bound = _max_norm(items)
            buffer = torch.empty((min(step, n), padded), dtype=torch.float32)
        for a in range(0, n, step):
            b = min(a + step, n)
            if items is not None:
                q = np.ascontiguousarray(queries(a, b), dtype=np.float32)
                block = torch.mm(torch.from_numpy(q), items_t.T, out=buffer[: b - a])
                block[:, n_items:] = float("-inf")
                # Cauchy-Schwarz: finite factors whose norms multiply below float32's range give finite scores
                finite = bool(items_bound * _max_norm(q) < 1e37)
            else:
                raw = np.require(scores(a, b), np.float32, ["C_CONTIGUOUS", "WRITEABLE", "OWNDATA"])
                block, finite = torch.from_numpy(raw), False
            filter_scores(block, seen(a, b) if seen is not None else None, allowed_t, finite=finite)
            out_idx[a:b], out_val[a:b] = topk_tensor(block, k)
        return out_idx, out_val

    def item_mask(
        self, allow_items: Iterable[Any] | None = None, deny_items: Iterable[Any] | None = None
    ) -> np.ndarray | None:
        """Boolean mask over the catalogue from allow/deny lists of external ids (unknown ids ignored)."""
        self._check_fitted()
        if allow_items is None and deny_items is None:
            return None
        n = len(self.items_)
        mask = np.ones(n, dtype=bool)
        if allow_items is not None:
            mask[:] = False
            idx = self.items_.to_internal(pl.Series(list(allow_items)), strict=False)
            mask[idx[idx >= 0]] = True
        if deny_items is not None:
            idx = self.items_.to_internal(pl.Series(list(deny_items)), strict=False)
            mask[idx[idx >= 0]] = False
        return mask

    def recommend(
        self,
        users: Iterable[Any],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        allow_items: Iterable[Any] | None = None,
        deny_items: Iterable[Any] | None = None,
    ) -> pl.DataFrame:
        """Top-k per known user as a long frame ``user_id, item_id, score, rank`` (rank from 1).

        Unknown users raise; missing slots (fewer than k eligible items) are left out.
        """
        self._check_fitted()
        k = check_k(k)
        users = pl.Series(
            USER, id_list(users, "users", "recommend([196, 42], k=10)"), dtype=self.users_.dtype, strict=False
        )
        internal = self.users_.to_internal(users, strict=False)
        if (internal < 0).any():
            unknown = users.filter(pl.Series(internal < 0)).head(5).to_list()
            raise DataValidationError(
                f"unknown user(s) {unknown} ({int((internal < 0).sum())} in all): not in the training data; "
                "use recommend_for_history(items) for users the model has not seen"
            )
        idx, val = self.recommend_indices(
            internal,
            k,
            exclude_seen=exclude_seen,
            allowed=self.item_mask(allow_items, deny_items),
        )
        return self._to_frame(users, idx, val)

    def recommend_for_history(
        self,
        items: Sequence[Any],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        allow_items: Iterable[Any] | None = None,
        deny_items: Iterable[Any] | None = None,
        timestamps: Sequence[float] | None = None,
        request_time: float | None = None,
    ) -> pl.DataFrame:
        """Top-k for a chronological history of external item ids given now (unknown ids ignored).

        ``timestamps`` (Unix seconds, one per item) and ``request_time`` are read by models that
        use time (``uses_time``; without times every gap counts as 0). Returns ``item_id, score, rank``.
        """
        self._check_fitted()
        if not self.supports_history:
            raise ConfigError(f"{type(self).__name__} cannot recommend from an ad-hoc history")
        k = check_k(k)
        items = id_list(items, "items", "recommend_for_history([50, 172], k=10)")
        hist = self.items_.to_internal(pl.Series(items, dtype=self.items_.dtype, strict=False), strict=False)
        times = None
        if timestamps is not None:
            if len(timestamps) != len(hist):
                raise DataValidationError(f"timestamps: {len(timestamps)} values for {len(hist)} items")
            times = [np.asarray(timestamps, dtype=np.int64)[hist >= 0]]
        idx, val = self.recommend_histories_indices(
            [hist[hist >= 0]],
            k,
            exclude_seen=exclude_seen,
            allowed=self.item_mask(allow_items, deny_items),
            times=times,
            requests=[None if request_time is None else int(request_time)],
        )
        return self._to_frame(pl.Series(USER, [None]), idx, val).drop(USER)

    def similar_item_scores(self, item_idx: np.ndarray) -> np.ndarray:
        """Similarity of every item to each of ``item_idx`` (len(item_idx) x n_items, float32):
        cosine of item vectors for embedding models (ALS, BPR, sequential), otherwise the scores
        for a one-item history (EASE's and ItemKNN's item-item weights)."""
        self._check_fitted()
        item_idx = np.asarray(item_idx, dtype=np.int64)
        vectors = getattr(self, "item_vectors", None)
        if callable(vectors):
            v = np.asarray(vectors(), dtype=np.float32)
            unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            return unit[item_idx] @ unit.T
        if self.supports_history and self.item_to_item:
            return self.score_histories([np.array([i]) for i in item_idx])
        raise ConfigError(
            f"{type(self).__name__} has no item-item signal (no item vectors, no history scoring); "
            "use ease, itemknn, als, bpr or a sequential model for similar items"
        )

    def similar_items(
        self,
        items: Iterable[Any],
        k: int = 10,
        *,
        allow_items: Iterable[Any] | None = None,
        deny_items: Iterable[Any] | None = None,
    ) -> pl.DataFrame:
        """The ``k`` items most similar to each of ``items`` (a product page's "similar items"),
        as ``item_id, similar_item_id, score, rank``; the item itself is never in its own list.

        Unknown item ids raise.
        """
        self._check_fitted()
        k = check_k(k)
        query = pl.Series(
            ITEM, id_list(items, "items", "similar_items([50], k=10)"), dtype=self.items_.dtype, strict=False
        )
        internal = self.items_.to_internal(query, strict=False)
        if (internal < 0).any():
            unknown = query.filter(pl.Series(internal < 0)).head(5).to_list()
            raise DataValidationError(f"unknown item(s) {unknown}: not in the training data")
        allowed = self.item_mask(allow_items, deny_items)
        out_idx = np.empty((len(internal), k), dtype=np.int64)
        out_val = np.empty((len(internal), k), dtype=np.float32)
        step = self._block_rows()
        allowed_t = None if allowed is None else torch.from_numpy(allowed)
        for start in range(0, len(internal), step):
            batch = internal[start : start + step]
            scores = torch.from_numpy(np.array(self.similar_item_scores(batch), dtype=np.float32, copy=True))
            filter_scores(scores, None, allowed_t)
            scores[torch.arange(len(batch)), torch.tensor(batch)] = float("-inf")
            out_idx[start : start + step], out_val[start : start + step] = topk_tensor(scores, k)
        return self._to_frame(query.alias(USER), out_idx, out_val).rename(
            {USER: ITEM, ITEM: "similar_item_id"}
        )

    def _to_frame(self, users: pl.Series, idx: np.ndarray, val: np.ndarray) -> pl.DataFrame:
        k = idx.shape[1]
        keep = (idx >= 0).ravel()
        flat = idx.ravel()[keep]
        return pl.DataFrame(
            {
                USER: users.gather(np.repeat(np.arange(len(users)), k)[keep]),
                ITEM: self.items_.to_external(flat),
                "score": val.ravel()[keep],
                "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(users))[keep],
            }
        )

    # ----------------------------------------------------------------- parameters
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind in kinds]

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments, as given (scikit-learn convention)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ----------------------------------------------------------------- persistence
    def _get_state(self) -> dict[str, np.ndarray]:
        """Learned arrays to save (besides id maps and seen items)."""
        return {}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what ``_get_state`` returned."""
        del state  # stateless by default

    def save(
        self, path: str | Path, *, name: str | None = None, lineage: dict[str, Any] | None = None
    ) -> Path:
        """Write the model as a directory: ``config.json``, ``state.safetensors``, id maps.

        No pickle: loading never executes code from the files. ``config.json`` carries the
        sha256 of every other file, so truncated or edited files are refused on load, the save
        time, the training summary (early-stopping models) and ``lineage`` (e.g. the data's
        fingerprint), both restored by :func:`load_model`.
        """
        from safetensors.numpy import save_file

        from vitrina.models.registry import registry_name

        self._check_fitted()
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{path}: exists and is not a folder; save the model to a folder path")
        path.mkdir(parents=True, exist_ok=True)
        state = {f"model.{k}": np.ascontiguousarray(v) for k, v in self._get_state().items()}
        state["history.indptr"] = self.history_indptr_.astype(np.int64)
        state["history.items"] = self.history_items_.astype(np.int64)
        save_file(state, str(path / "state.safetensors"))
        self.users_.save(path / "users.parquet")
        self.items_.save(path / "items.parquet")
        files = ["state.safetensors", "users.parquet", "items.parquet"]
        config = {
            "format": "vitrina-model",
            "schema_version": SCHEMA_VERSION,
            "vitrina_version": __version__,
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "lineage": lineage or {},
            "model": name or registry_name(self),
            "params": self.get_params(),
            "sha256": {f: hashlib.sha256((path / f).read_bytes()).hexdigest() for f in files},
        }
        if hasattr(self, "training_summary_"):  # epochs, best epoch, validation scores: kept on load
            config["training_summary"] = self.training_summary_
        config = json.loads(json.dumps(config, default=str))
        config[CONFIG_DIGEST] = _config_digest(config)
        (path / "config.json").write_text(json.dumps(config, indent=2))
        return path


def check_k(k: object) -> int:
    """``k`` as an int, or a ConfigError naming what was received (``"10"``, ``0``, ``True``)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"k: expected a positive integer, got {k!r} ({type(k).__name__}), e.g. k=10")
    return int(k)


def id_list(values: object, name: str, example: str) -> list[Any]:
    """A list of external ids; a single id (a number or a string) is refused with an example."""
    if isinstance(values, str | bytes | int | float | np.generic) or not isinstance(values, Iterable):
        raise ConfigError(
            f"{name}: expected a list of ids, got {type(values).__name__} {values!r}; "
            f"wrap a single id in a list, e.g. {example}"
        )
    return list(values)


#: key of config.json holding the sha256 of the rest of config.json (canonical JSON)
CONFIG_DIGEST = "config_sha256"
#: files every saved model has; config.json must list a sha256 for each
BUNDLE_FILES = ("state.safetensors", "users.parquet", "items.parquet")


def _config_digest(config: dict[str, Any]) -> str:
    body = {k: v for k, v in config.items() if k != CONFIG_DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load_model(path: str | Path) -> Recommender:
    """Load a directory written by :meth:`Recommender.save`; refuses anything altered.

    Every problem is a :class:`ModelLoadError` naming the bundle: a missing or edited file
    (config.json included), a file list naming anything but plain files of the bundle, learned
    arrays of the wrong shape for the id maps or holding NaN/inf, and a probe score that is not
    one finite value per item.
    """
    path = Path(path)
    try:
        return _load_model(path)
    except ModelLoadError:
        raise
    except RecursionError:
        raise ModelLoadError(f"{path}: config.json is nested too deeply to be a model config") from None
    except Exception as exc:  # the files decide what fails (polars, safetensors, numpy, torch): one error
        raise ModelLoadError(f"{path}: not a loadable vitrina model ({type(exc).__name__}: {exc})") from exc


def _verified_files(path: Path, cfg_path: Path, config: dict[str, Any]) -> None:
    """config.json's own digest, then every listed file's: names must be plain files of the bundle."""
    if config.get(CONFIG_DIGEST) != _config_digest(config):
        what = "has no checksum of itself" if CONFIG_DIGEST not in config else "was edited after saving"
        raise ModelLoadError(f"{cfg_path}: {what}; re-save the model (vitrina train) instead of editing it")
    digests = config.get("sha256")
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        raise ModelLoadError(f"{cfg_path}: 'sha256' must map each file of the bundle to its checksum")
    missing = [f for f in BUNDLE_FILES if f not in digests]
    if missing:
        raise ModelLoadError(f"{cfg_path}: no checksum for {missing}; refusing unchecked files")
    for name, digest in digests.items():
        file = path / name
        if name in ("", ".", "..") or any(c in name for c in "/\\\x00"):
            raise ModelLoadError(f"{cfg_path}: {name!r} in 'sha256' is not a file name inside the bundle")
        if file.is_symlink() or not file.is_file():
            raise ModelLoadError(f"{file}: missing or not a regular file")
        if hashlib.sha256(file.read_bytes()).hexdigest() != digest:
            raise ModelLoadError(f"{file}: checksum mismatch (file truncated or modified after saving)")


def _load_model(path: Path) -> Recommender:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from vitrina.models.registry import make_model

    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ModelLoadError(f"{path}: not a vitrina model directory (no config.json)")
    try:
        config = json.loads(cfg_path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{cfg_path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != "vitrina-model":
        raise ModelLoadError(f"{cfg_path}: not a vitrina model config")
    if config.get("schema_version") != SCHEMA_VERSION:
        raise ModelLoadError(
            f"{cfg_path}: schema_version {config.get('schema_version')}, this vitrina reads {SCHEMA_VERSION}"
        )
    _verified_files(path, cfg_path, config)
    try:
        state = load_file(str(path / "state.safetensors"))
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(f"{path / 'state.safetensors'}: unreadable ({exc})") from exc
    for name, array in state.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ModelLoadError(f"{path}: learned array {name!r} holds NaN or infinite values")
    params = config.get("params", {})
    if not isinstance(params, dict):
        raise ModelLoadError(f"{cfg_path}: 'params' must be an object")
    model = make_model(str(config["model"]), dict(params))
    model.users_ = IdMap.load(path / "users.parquet")
    model.items_ = IdMap.load(path / "items.parquet")
    indptr, items = state["history.indptr"], state["history.items"]
    if (
        indptr.ndim != 1
        or items.ndim != 1
        or len(indptr) != len(model.users_) + 1
        or indptr[0] != 0
        or indptr[-1] != len(items)
        or (np.diff(indptr) < 0).any()
        or (len(items) and (items.min() < 0 or items.max() >= len(model.items_)))
    ):
        raise ModelLoadError(f"{path}: user histories do not match the id maps")
    model.history_indptr_, model.history_items_ = indptr, items
    # the histories are already in CSR layout: no per-user Python loop (a hot swap loads this while
    # the server's event loop needs the GIL)
    seen = sp.csr_matrix(
        (np.ones(len(items), np.float32), items, indptr),
        shape=(len(indptr) - 1, len(model.items_)),
        copy=True,  # sum_duplicates sorts in place; the histories keep their order
    )
    seen.sum_duplicates()
    seen.data[:] = 1.0
    model.seen_ = seen
    model._set_state({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    model.lineage_ = dict(config.get("lineage") or {})  # type: ignore[attr-defined]
    if isinstance(config.get("training_summary"), dict):
        model.training_summary_ = config["training_summary"]  # type: ignore[attr-defined]
    _probe(model, path)
    return model


def _max_norm(vectors: np.ndarray) -> float:
    """Largest row norm, ``inf`` if any value is not finite."""
    if vectors.size == 0:
        return 0.0
    norm = float(np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64).max()))
    return norm if np.isfinite(norm) else float("inf")


def _probe(model: Recommender, path: Path) -> None:
    """Score the first user (and a one-item history where supported): one finite score per item,
    or the weights do not fit the id maps."""
    n_items = len(model.items_)
    if len(model.users_) == 0 or n_items == 0:
        raise ModelLoadError(f"{path}: the model has no users or no items to serve")
    probes = [model.score_users(np.array([0], dtype=np.int64))]
    if model.supports_history:
        probes.append(model.score_histories([np.array([0], dtype=np.int64)]))
    for scores in probes:
        if np.shape(scores) != (1, n_items):
            raise ModelLoadError(
                f"{path}: scores have shape {np.shape(scores)}, expected (1, {n_items}) for {n_items} items; "
                "the learned arrays do not match the id maps"
            )
        if not np.isfinite(scores).all():
            raise ModelLoadError(f"{path}: a probe score is NaN or infinite; the learned arrays are damaged")
