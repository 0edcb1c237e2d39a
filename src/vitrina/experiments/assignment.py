"""Deterministic variant assignment: salted hashing of the unit id into buckets, layers, holdout.

How a unit (user by default) is placed:

1. **Holdout**: ``bucket(unit, "vitrina-holdout")`` below ``holdout * n_buckets`` -> the unit is in no
   experiment at all (a long-running control group for the cumulative effect of all launches).
2. **Layer**: each layer hashes with its own salt (``"layer:<name>"``), so layers are orthogonal. The
   experiments of one layer take consecutive, non-overlapping bucket ranges in declaration order
   (``traffic`` each, summing to at most 1): they are mutually exclusive.
3. **Variant**: inside an experiment a second hash salted with the experiment's ``salt`` (its name by
   default) picks the variant by cumulative shares, so the split does not depend on the bucket range.

The same unit id always gets the same variants for the same configuration; change ``salt`` to
reshuffle users when re-running an experiment.

>>> exp = Experiment(name="ranker_v2", layer="ranking", variants={"control": 0.5, "treatment": 0.5})
>>> assigner = Assigner([exp])
>>> assigner.assign("user-42") == assigner.assign("user-42")
True
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vitrina.errors import ConfigError

__all__ = ["HOLDOUT_SALT", "Assigner", "Experiment", "bucket"]

HOLDOUT_SALT = "vitrina-holdout"
_SHARE_TOL = 1e-9


def bucket(unit_id: str, salt: str, n_buckets: int = 10_000) -> int:
    """Bucket in ``[0, n_buckets)`` of ``unit_id`` under ``salt`` (first 8 bytes of sha256, mod n).

    >>> bucket("user-1", "layer:ranking") == bucket("user-1", "layer:ranking")
    True
    """
    digest = hashlib.sha256(f"{salt}\x1f{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n_buckets


class Experiment(BaseModel):
    """One experiment: its layer, variant shares (summing to 1) and the fraction of the layer it takes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    layer: str = Field(default="default", min_length=1)
    variants: dict[str, float]
    traffic: float = Field(default=1.0, gt=0.0, le=1.0)
    salt: str | None = None

    @field_validator("variants")
    @classmethod
    def _check_variants(cls, variants: dict[str, float]) -> dict[str, float]:
        if len(variants) < 2:
            raise ValueError(f"needs at least 2 variants, got {list(variants)}; e.g. {{'control': 0.5, ...}}")
        bad = {k: v for k, v in variants.items() if not (0.0 < v <= 1.0)}
        if bad:
            raise ValueError(f"variant shares must be in (0, 1], got {bad}")
        total = math.fsum(variants.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"variant shares must sum to 1, got {total:.6g} from {variants}")
        return variants

    @property
    def variant_salt(self) -> str:
        """Salt of the within-experiment variant hash (``salt`` or the experiment name)."""
        return self.salt if self.salt is not None else f"experiment:{self.name}"


class Assigner:
    """Assigns units to the experiments they are in and to one variant of each.

    ``holdout`` is the fraction of all units kept out of every experiment.
    """

    def __init__(self, experiments: Sequence[Experiment], n_buckets: int = 10_000, holdout: float = 0.0):
        if n_buckets < 2:
            raise ConfigError(f"n_buckets must be >= 2, got {n_buckets}; the default 10_000 fits most uses")
        if not 0.0 <= holdout < 1.0:
            raise ConfigError(f"holdout must be in [0, 1), got {holdout}; use e.g. 0.05 for a 5% holdout")
        names = [e.name for e in experiments]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"experiment names must be unique, got duplicates {dupes}; rename one of them")
        self.experiments: tuple[Experiment, ...] = tuple(experiments)
        self.n_buckets = n_buckets
        self.holdout = holdout
        self._holdout_buckets = round(holdout * n_buckets)
        self._layers: dict[str, list[tuple[int, int, Experiment]]] = {}
        self._variant_edges: dict[str, tuple[list[int], list[str]]] = {}
        used: dict[str, float] = {}
        for exp in self.experiments:
            used[exp.layer] = used.get(exp.layer, 0.0) + exp.traffic
            if used[exp.layer] > 1.0 + _SHARE_TOL:
                raise ConfigError(
                    f"layer '{exp.layer}' is over-allocated: traffic sums to {used[exp.layer]:.4g} > 1 "
                    f"after adding experiment '{exp.name}'; lower a traffic or move it to another layer"
                )
            ranges = self._layers.setdefault(exp.layer, [])
            start = ranges[-1][1] if ranges else 0
            end = min(n_buckets, start + round(exp.traffic * n_buckets))
            if end == start:
                raise ConfigError(
                    f"experiment '{exp.name}' traffic {exp.traffic} is below one bucket of {n_buckets}; "
                    "raise traffic or n_buckets"
                )
            ranges.append((start, end, exp))
            self._variant_edges[exp.name] = self._edges(exp)

    def _edges(self, exp: Experiment) -> tuple[list[int], list[str]]:
        """Upper bucket edges (exclusive) of all variants but the last, and the variant names."""
        cumulative = itertools.accumulate(exp.variants.values())
        edges = [round(c * self.n_buckets) for c in cumulative][:-1]
        return edges, list(exp.variants)

    def is_holdout(self, unit_id: str) -> bool:
        """Whether the unit is in the global holdout (and so in no experiment)."""
        return bucket(unit_id, HOLDOUT_SALT, self.n_buckets) < self._holdout_buckets

    def assign(self, unit_id: str) -> dict[str, str]:
        """Experiment name -> variant for every experiment the unit is in (empty in the holdout)."""
        unit_id = str(unit_id)
        if self.is_holdout(unit_id):
            return {}
        out: dict[str, str] = {}
        for layer, ranges in self._layers.items():
            b = bucket(unit_id, f"layer:{layer}", self.n_buckets)
            for start, end, exp in ranges:
                if start <= b < end:
                    out[exp.name] = self._variant(unit_id, exp)
                    break
        return out

    def _variant(self, unit_id: str, exp: Experiment) -> str:
        edges, variants = self._variant_edges[exp.name]
        return variants[bisect.bisect_right(edges, bucket(unit_id, exp.variant_salt, self.n_buckets))]
