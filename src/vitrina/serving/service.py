"""The recommendation service without HTTP: model bundles, the store, experiments, metrics."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitrina.errors import ConfigError, VitrinaError
from vitrina.experiments.schema import EXPOSURE
from vitrina.serving.batching import ScoreBatcher
from vitrina.serving.bundle import ModelBundle
from vitrina.serving.calibration import ExpectedValueModel
from vitrina.serving.catalog import Catalog
from vitrina.serving.filters import BadRequest, UnknownItem, candidate_mask
from vitrina.serving.fleet import DEFAULT, Fleet, Source
from vitrina.serving.metrics import Metrics
from vitrina.serving.ranking import Target, build_slate, explore, resolve_target, score_candidates, top_k
from vitrina.serving.schemas import (
    CarouselResult,
    EventsRequest,
    EventsResponse,
    Exploration,
    RecommendRequest,
    RecommendResponse,
    ScoredItem,
    SimilarRequest,
    SimilarResponse,
    SlateRequest,
    SlateResponse,
)
from vitrina.serving.settings import Settings
from vitrina.serving.stores import EventStore, LogRow, RedisStore, SQLiteStore
from vitrina.serving.variants import Assigner, ExperimentPlan, read_plan

log = logging.getLogger("vitrina.serving")


class OutsideModelRoot(VitrinaError):
    """A hot swap named a bundle outside the folder the service may load models from."""


#: experiment name of exploration exposures for users in no experiment (variant: the policy spec)
EXPLORATION_EXPERIMENT = "exploration"
#: with ``--workers N`` a swap answers once every worker serves the new model, or after this many seconds
SWAP_WAIT_S = 120.0


class Retention:
    """Deletes stored events older than ``days`` from a background thread: once at start, then
    every ``interval_s`` seconds, until :meth:`close`."""

    def __init__(self, store: EventStore, days: float, interval_s: float) -> None:
        self._store, self.days, self._interval = store, days, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vitrina-retention", daemon=True)
        self._thread.start()

    def prune(self) -> int:
        """One pass now; returns the log rows deleted."""
        return self._store.prune(time.time() - self.days * 86_400)

    def _run(self) -> None:
        while True:
            try:
                deleted = self.prune()
                log.info("retention: deleted %d events older than %g days", deleted, self.days)
            except Exception:  # a failed pass (store unreachable) must not stop later ones
                log.exception("retention: pruning failed; retrying in %g s", self._interval)
            if self._stop.wait(self._interval):
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class ExposureLog:
    """Writes recommendation exposures from a background thread, so ranking never waits on disk."""

    def __init__(self, store: EventStore, interval_s: float = 0.05) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[LogRow | None] = queue.SimpleQueue()
        self._interval = interval_s
        self._thread = threading.Thread(target=self._run, name="vitrina-exposures", daemon=True)
        self._thread.start()

    def put(self, row: LogRow) -> None:
        self._queue.put(row)

    def _run(self) -> None:
        stop = False
        while not stop:
            rows = []
            item = self._queue.get()
            deadline = time.monotonic() + self._interval
            while True:
                if item is None:
                    stop = True
                    break
                rows.append(item)
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
            if rows:
                self._store.append(rows)

    def close(self) -> None:
        """Flush what is queued and stop."""
        self._queue.put(None)
        self._thread.join()


@dataclass
class Service:
    """Serves recommendations; ``default`` and ``variants`` are replaced whole on a hot swap."""

    default: ModelBundle
    store: EventStore
    settings: Settings
    catalog: Catalog | None = None
    ev_model: ExpectedValueModel | None = None
    assigner: Assigner | None = None
    variant_models: dict[str, dict[str, ModelBundle]] = field(default_factory=dict)
    metrics: Metrics = field(default_factory=Metrics)
    #: where each served bundle came from, by key (``default``, ``experiment/variant``)
    sources: dict[str, Source] = field(default_factory=dict)
    _swap_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        #: with ``--workers N``: the run's shared folder (:meth:`follow`), else None
        self.fleet: Fleet | None = None
        #: the swap-record generation this process serves (``--workers N``)
        self.generation = 0
        self._follower: threading.Thread | None = None
        self._stop = threading.Event()
        self.exposures = ExposureLog(self.store)
        self.batcher = ScoreBatcher()
        days = self.settings.retention_days
        self.retention = Retention(self.store, days, self.settings.prune_interval_s) if days else None

    @classmethod
    def from_settings(cls, settings: Settings, *, assigner: Assigner | None = None) -> Service:
        """Load everything; ``assigner`` overrides the one built from ``settings.experiments``."""
        catalog = Catalog.read(settings.catalog) if settings.catalog else None
        default = ModelBundle.load(settings.model_dir, catalog=catalog, ann=settings.ann)
        plan = read_plan(settings.experiments) if settings.experiments else None
        if plan is not None and assigner is None:
            assigner = plan.assigner
        variants = cls._load_variants(plan, catalog, settings.ann) if plan else {}
        store: EventStore
        if settings.redis_url:
            store = RedisStore(
                settings.redis_url, prefix=settings.redis_prefix, max_history=settings.max_history
            )
        else:
            store = SQLiteStore(
                settings.state_db, max_history=settings.max_history, synchronous=settings.sqlite_sync
            )
        ev = ExpectedValueModel.load(settings.calibration) if settings.calibration else None
        sources = {DEFAULT: Source(str(settings.model_dir.resolve()), default.version)}
        if plan is not None:
            for exp, by_variant in plan.models.items():
                for v, d in by_variant.items():
                    sources[f"{exp}/{v}"] = Source(str(d.resolve()), variants[exp][v].version)
        return cls(default, store, settings, catalog, ev, assigner, variants, sources=sources)

    @staticmethod
    def _load_variants(
        plan: ExperimentPlan, catalog: Catalog | None, ann: bool
    ) -> dict[str, dict[str, ModelBundle]]:
        return {
            exp: {v: ModelBundle.load(d, catalog=catalog, ann=ann) for v, d in by_variant.items()}
            for exp, by_variant in plan.models.items()
        }

    def close(self) -> None:
        if self._follower is not None:
            self._stop.set()
            self._follower.join()
        if self.fleet is not None:
            with suppress(OSError):  # the run's folder goes when the supervisor stops
                self.fleet.write_metrics(self.metrics.snapshot())
                self.fleet.leave()
        if self.retention is not None:
            self.retention.close()
        self.exposures.close()
        self.store.close()

    # ----------------------------------------------------------------- ranking
    def _route(self, user_id: Any) -> tuple[ModelBundle, str | None, str | None, dict[str, str]]:
        """The bundle for this user, the experiment that chose it, its variant, and all assignments."""
        if self.assigner is None or user_id is None:
            return self.default, None, None, {}
        assignment = self.assigner.assign(str(user_id))
        for exp, by_variant in self.variant_models.items():
            if exp in assignment:
                variant = assignment[exp]
                return by_variant.get(variant, self.default), exp, variant, assignment
        first = next(iter(assignment.items()), (None, None))
        return self.default, first[0], first[1], assignment

    def _log_exposures(
        self,
        unit_id: str,
        request_id: str,
        assignment: dict[str, str],
        shown: list[ScoredItem] | None = None,
        exploration: Exploration | None = None,
    ) -> None:
        """One row per experiment; with exploration one per experiment and shown item, with propensity.

        Explored requests of users in no experiment are logged under :data:`EXPLORATION_EXPERIMENT`.
        """
        now = time.time()
        if shown is None or exploration is None:
            for exp, variant in assignment.items():
                self.exposures.put(LogRow(now, unit_id, EXPOSURE, exp, variant, 1.0, request_id=request_id))
            return
        arms = assignment or {EXPLORATION_EXPERIMENT: exploration.spec}
        for exp, variant in arms.items():
            for it in shown:
                row = LogRow(
                    now,
                    unit_id,
                    EXPOSURE,
                    exp,
                    variant,
                    1.0,
                    item_id=str(it.item_id),
                    propensity=it.propensity,
                    request_id=request_id,
                    position=it.position,
                )
                self.exposures.put(row)

    def _prepare(
        self, req: RecommendRequest | SlateRequest
    ) -> tuple[
        str, ModelBundle, str | None, str | None, dict[str, str], Target, np.ndarray, np.ndarray | None
    ]:
        request_id = uuid.uuid4().hex
        user_id, filters = req.user_id, req.filters
        bundle, exp, variant, assignment = self._route(user_id)
        logged: list[str] = []
        logged_times: list[float] | None = None
        if user_id is not None and bundle.model.uses_time:
            logged, logged_times = self.store.timed_history(str(user_id))
        elif user_id is not None:
            logged = self.store.history(str(user_id))
        target = resolve_target(
            bundle,
            user_id,
            req.history,
            logged,
            given_times=req.history_timestamps,
            logged_times=logged_times,
            request_time=req.request_time if req.request_time is not None else time.time(),
        )
        if target.fallback_reason:
            self.metrics.fallback(target.fallback_reason)
        mask, distance = candidate_mask(bundle, filters, target.seen)
        return request_id, bundle, exp, variant, assignment, target, mask, distance

    @staticmethod
    def _items(
        bundle: ModelBundle,
        idx: np.ndarray,
        val: np.ndarray,
        distance: np.ndarray | None,
        propensity: np.ndarray | None = None,
    ) -> list[ScoredItem]:
        return [
            ScoredItem(
                item_id=bundle.item_ids[i],
                score=float(v),
                distance_km=None if distance is None or np.isnan(distance[i]) else float(distance[i]),
                position=pos,
                propensity=None if propensity is None else float(propensity[pos]),
            )
            for pos, (i, v) in enumerate(zip(idx.tolist(), val.tolist(), strict=True))
        ]

    async def recommend(self, req: RecommendRequest) -> RecommendResponse:
        """Top-k for one request; its model call is batched with concurrent ones (:mod:`.batching`)."""
        request_id, bundle, exp, variant, assignment, target, mask, distance = self._prepare(req)
        raw = await self.batcher.scores(bundle, target, mask, req.k)
        location = req.filters.location
        scores = score_candidates(bundle, target, raw, mask, distance, location, req.ranking, self.ev_model)
        exploration = req.exploration or self.settings.exploration
        if exploration.policy == "off":
            idx, val = top_k(scores, req.k)
            items = self._items(bundle, idx, val, distance)
            self._log_exposures(str(req.user_id), request_id, assignment)
        else:
            rng = np.random.default_rng(req.exploration_seed)
            idx, val, prop = explore(scores, req.k, exploration, rng)
            items = self._items(bundle, idx, val, distance, prop)
            unit = request_id if req.user_id is None else str(req.user_id)
            self._log_exposures(unit, request_id, assignment, items, exploration)
        return RecommendResponse(
            request_id=request_id,
            model_version=bundle.version,
            experiment=exp,
            variant=variant,
            fallback=target.fallback_reason is not None,
            fallback_reason=target.fallback_reason,
            unknown_items=target.unknown_items,
            items=items,
            exploration=exploration.spec,
            n_eligible=int(mask.sum()),
            fewer_than_k=len(idx) < req.k,
        )

    def similar(self, req: SimilarRequest) -> SimilarResponse:
        """The default model's most similar items to ``req.item_id``, business rules applied first."""
        bundle = self.default
        idx = bundle.item_idx(req.item_id)
        if idx < 0:
            raise UnknownItem(f"item_id {req.item_id!r} is not in the model's catalogue")
        mask, distance = candidate_mask(bundle, req.filters, np.empty(0, dtype=np.int64))
        mask[idx] = False
        try:
            scores = bundle.model.similar_item_scores(np.array([idx]))[0].astype(np.float32, copy=True)
        except ConfigError as exc:
            raise BadRequest(str(exc)) from None
        scores[~mask | ~np.isfinite(scores)] = -np.inf
        top, val = top_k(scores, req.k)
        return SimilarResponse(
            request_id=uuid.uuid4().hex,
            model_version=bundle.version,
            item_id=req.item_id,
            items=self._items(bundle, top, val, distance),
            n_eligible=int(mask.sum()),
        )

    async def slate(self, req: SlateRequest) -> SlateResponse:
        request_id, bundle, exp, variant, assignment, target, mask, distance = self._prepare(req)
        masks = []
        for c in req.carousels:
            m = mask.copy()
            if c.category is not None:
                if bundle.catalog is None:
                    raise BadRequest(
                        f"carousel {c.name!r}: 'category' needs item metadata; start with --catalog FILE"
                    )
                m &= bundle.catalog.category_mask([c.category])
            if c.filters is not None:
                m &= candidate_mask(bundle, c.filters, target.seen)[0]
            masks.append(m)
        n_cand = req.k * len(req.carousels)
        location = req.filters.location
        raw = await self.batcher.scores(bundle, target, mask, n_cand)
        scores = score_candidates(bundle, target, raw, mask, distance, location, req.ranking, self.ev_model)
        filled = build_slate(
            scores, masks, req.k, allow_duplicates=req.allow_duplicates, rank_carousels=req.rank_carousels
        )
        carousels = [
            CarouselResult(
                name=req.carousels[c].name,
                score=value,
                items=self._items(bundle, idx, val, distance),
                n_eligible=n_eligible,
                fewer_than_k=len(idx) < req.k,
            )
            for c, value, idx, val, n_eligible in filled
        ]
        self._log_exposures(str(req.user_id), request_id, assignment)
        return SlateResponse(
            request_id=request_id,
            model_version=bundle.version,
            experiment=exp,
            variant=variant,
            fallback=target.fallback_reason is not None,
            fallback_reason=target.fallback_reason,
            unknown_items=target.unknown_items,
            carousels=carousels,
        )

    # ----------------------------------------------------------------- events and admin
    def record(self, req: EventsRequest) -> EventsResponse:
        """Append events durably; returns once they are committed."""
        now = time.time()
        rows = [
            LogRow(
                timestamp=e.timestamp if e.timestamp is not None else now,
                unit_id=str(e.user_id),
                event=e.event,
                experiment=e.experiment,
                variant=e.variant,
                value=e.value,
                item_id=None if e.item_id is None else str(e.item_id),
                propensity=e.propensity,
                request_id=e.request_id,
            )
            for e in req.events
        ]
        self.store.append(rows)
        for r in rows:
            self.metrics.events(r.event, 1)
        return EventsResponse(accepted=len(rows), interactions=sum(r.extends_history for r in rows))

    def swap(self, model_dir: Path, variant: str | None) -> tuple[str, str]:
        """Load a bundle and replace the default (or ``experiment/variant``) model; returns versions.

        A bundle that fails to load raises and leaves the serving model untouched; one outside the
        model root raises :class:`OutsideModelRoot` without being read. With ``--workers N`` the swap
        is published to the other workers, and this returns once every live one serves it too (or
        after :data:`SWAP_WAIT_S`, logged).
        """
        root = (self.settings.model_root or self.settings.model_dir.parent).resolve()
        if not model_dir.resolve().is_relative_to(root):
            raise OutsideModelRoot(f"model_dir {str(model_dir)!r}: outside the model root {str(root)!r}")
        key = DEFAULT if variant is None else variant
        with self._swap_lock:
            if variant is not None:
                exp, _, var = variant.partition("/")
                if var not in self.variant_models.get(exp, {}):
                    known = [f"{e}/{v}" for e, vs in self.variant_models.items() for v in vs]
                    raise BadRequest(f"variant {variant!r}: not a variant with its own model; known: {known}")
            new = ModelBundle.load(model_dir, catalog=self.catalog, ann=self.settings.ann)
            old = self._bundle(key)
            source = Source(str(model_dir.resolve()), new.version)
            if self.fleet is None:
                self._replace(key, new, source)
                return new.version, old.version
            with self.fleet.locked():  # publish and switch together: swaps reach the record in order
                generation = self.fleet.publish(key, source)
                self._replace(key, new, source)
            self._catch_up(self.fleet)  # swaps another worker published since this one last looked
        late = self.fleet.wait(generation, SWAP_WAIT_S)
        if late:
            log.warning(
                "swap to %s: workers %s still serve the old model after %g s", new.version, late, SWAP_WAIT_S
            )
        return new.version, old.version

    def _bundle(self, key: str) -> ModelBundle:
        if key == DEFAULT:
            return self.default
        exp, _, var = key.partition("/")
        return self.variant_models[exp][var]

    def _replace(self, key: str, bundle: ModelBundle, source: Source) -> None:
        """Serve ``bundle`` for ``key``: one reference replaced, requests in flight keep the old one."""
        if key == DEFAULT:
            self.default = bundle
        else:
            exp, _, var = key.partition("/")
            self.variant_models = {**self.variant_models, exp: {**self.variant_models[exp], var: bundle}}
        self.sources[key] = source

    # ----------------------------------------------------------------- several workers
    def follow(self, fleet: Fleet, poll_s: float = 0.1) -> None:
        """Serve what ``fleet``'s swap record names (loading it now), then poll it every ``poll_s``
        seconds from a background thread, which also writes this process's metrics for the others."""
        self.fleet = fleet
        with self._swap_lock:
            self._catch_up(fleet)
        fleet.caught_up(self.generation)  # from now on a swap waits for this process too
        self._follower = threading.Thread(
            target=self._follow, args=(fleet, poll_s), name="vitrina-follow", daemon=True
        )
        self._follower.start()

    def _follow(self, fleet: Fleet, poll_s: float) -> None:
        written = -1
        while not self._stop.wait(poll_s):
            try:
                if fleet.read().generation > self.generation:
                    with self._swap_lock:
                        self._catch_up(fleet)
                if self.metrics.changes != written:
                    written = self.metrics.changes
                    fleet.write_metrics(self.metrics.snapshot())
            except Exception:  # a failed pass (disk full, ...) must not stop later ones
                log.exception("following the other workers failed; retrying")

    def _catch_up(self, fleet: Fleet) -> None:
        """Load and swap in every model the record names that this process does not serve (hold
        ``_swap_lock``). A bundle that no longer loads is logged and the old one kept."""
        record = fleet.read()
        if record.generation <= self.generation:
            return
        for key, source in record.models.items():
            if self.sources.get(key) == source:
                continue
            exp, _, var = key.partition("/")
            if key != DEFAULT and var not in self.variant_models.get(exp, {}):
                log.error("swap record names %r, not a variant with its own model here; ignored", key)
                continue
            try:
                bundle = ModelBundle.load(source.path, catalog=self.catalog, ann=self.settings.ann)
            except Exception:  # any failure (ModelLoadError, out of memory) keeps the serving model
                log.exception("cannot load %s (another worker swapped it in); kept the old one", source.path)
                continue
            if bundle.version != source.version:
                changed = "%s changed since it was swapped in (%s, now %s)"
                log.warning(changed, source.path, source.version, bundle.version)
            self._replace(key, bundle, Source(source.path, bundle.version))
        self.generation = record.generation
        fleet.caught_up(self.generation)
