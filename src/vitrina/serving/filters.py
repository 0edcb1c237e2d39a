"""Business rules as one boolean mask over the model's items, built before anything is scored."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from vitrina.errors import VitrinaError
from vitrina.serving.bundle import ModelBundle
from vitrina.serving.schemas import Filters

EARTH_RADIUS_KM = 6371.0088


class BadRequest(VitrinaError, ValueError):
    """A well-formed request the service cannot honour (answered with HTTP 400)."""


class UnknownItem(BadRequest):
    """The item a request is about is not in the model's catalogue (answered with HTTP 404)."""


def haversine_km(lat: float, lon: float, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    """Great-circle distances in km from one point to many (NaN where coordinates are missing).

    >>> round(float(haversine_km(0.0, 0.0, np.array([0.0]), np.array([1.0]))[0]), 1)
    111.2
    """
    p1, p2 = np.radians(lat), np.radians(lats)
    dp, dl = p2 - p1, np.radians(lons - lon)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _indices(bundle: ModelBundle, ids: Iterable[Any]) -> np.ndarray:
    idx = np.fromiter((bundle.item_idx(i) for i in ids), dtype=np.int64)
    return idx[idx >= 0]


def candidate_mask(
    bundle: ModelBundle, filters: Filters, seen: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(mask, distance_km)``: items every rule allows, and distances if a location was given.

    ``seen`` holds the item indices of the user's history (used when ``exclude_seen``). Rules
    needing catalogue columns raise :class:`BadRequest` when the service has no catalogue.
    """
    cat = bundle.catalog
    mask = cat.available.copy() if cat is not None else np.ones(bundle.n_items, dtype=bool)
    if filters.exclude_seen:
        mask[seen] = False
    if filters.allow_items is not None:
        allowed = np.zeros_like(mask)
        allowed[_indices(bundle, filters.allow_items)] = True
        mask &= allowed
    if filters.deny_items:
        mask[_indices(bundle, filters.deny_items)] = False
    needs_catalog = [
        name
        for name in ("categories", "exclude_categories", "segment", "location")
        if getattr(filters, name) is not None
    ]
    if cat is None:
        if needs_catalog:
            raise BadRequest(
                f"filters {needs_catalog} need item metadata; start the service with --catalog FILE "
                "(columns item_id, available, category, lat, lon, value, segments)"
            )
        return mask, None
    if filters.categories is not None:
        mask &= cat.category_mask(filters.categories)
    if filters.exclude_categories:
        mask &= ~cat.category_mask(filters.exclude_categories)
    mask &= cat.segment_mask(filters.segment)
    distance = None
    if filters.location is not None:
        loc = filters.location
        distance = haversine_km(loc.lat, loc.lon, cat.lat, cat.lon)
        if loc.max_distance_km is not None:
            with np.errstate(invalid="ignore"):
                mask &= distance <= loc.max_distance_km
    return mask, distance
