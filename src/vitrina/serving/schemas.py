"""Request and response bodies (published in the OpenAPI document at ``/openapi.json``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    model_validator,
)

MAX_K = 1000
#: hard ceilings of list lengths in a request; the service's own limits (Settings) are at most these
MAX_EVENTS = 10_000
MAX_HISTORY = 10_000
MAX_DISTANCE_PENALTY = 1e6
EARLIEST = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp())
LATEST = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp())
Id = StrictInt | Annotated[str, StringConstraints(min_length=1, max_length=256)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Ranking = Literal["score", "expected_value"]


def _sane_time(ts: float) -> float:
    if not EARLIEST <= ts <= LATEST:
        raise ValueError(
            f"timestamp must be Unix seconds in [{EARLIEST}, {LATEST}] (years 2000..2100), got {ts!r}"
        )
    return ts


Timestamp = Annotated[float, AfterValidator(_sane_time)]


def _seconds(t: float) -> str:
    """A time as given: ``1300000000``, not ``1300000000.0``."""
    return str(int(t)) if t.is_integer() else repr(t)


class _Body(BaseModel):
    """Strict, finite request bodies: ``"52.5"`` or ``true`` is no number, ``"true"`` no bool
    (an integer is accepted for a float); NaN and infinities are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class Location(_Body):
    """Where the user is; items without coordinates fail ``max_distance_km`` and get no penalty."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    max_distance_km: float | None = Field(None, gt=0, description="drop items farther than this")
    distance_penalty: float = Field(
        0.0,
        ge=0,
        le=MAX_DISTANCE_PENALTY,
        description=f"subtracted from the score per km, 0..{MAX_DISTANCE_PENALTY:g}",
    )


class Filters(_Body):
    """Business rules, applied as a mask on the candidate set before the top-k cut."""

    exclude_seen: bool = Field(
        True, description="drop items in the user's history (trained + events + given)"
    )
    allow_items: list[Id] | None = Field(None, max_length=10_000, description="only these items")
    deny_items: list[Id] | None = Field(None, max_length=10_000, description="never these items")
    categories: list[Name] | None = Field(None, max_length=100, description="only items of these categories")
    exclude_categories: list[Name] | None = Field(None, max_length=100)
    segment: Name | None = Field(None, description="the user's segment, for items restricted to segments")
    location: Location | None = None


class _Target(_Body):
    user_id: Id | None = Field(None, description="a known user; unknown users get a flagged fallback")
    history: list[Id] | None = Field(
        None,
        max_length=MAX_HISTORY,
        description="recent items / triggers, oldest first (unknown ids are ignored); at most the "
        "service's --max-request-history",
    )
    history_timestamps: list[Timestamp] | None = Field(
        None,
        max_length=MAX_HISTORY,
        description="Unix seconds of each history item (same length as history, non-decreasing); read "
        "by models that use time (hstu, fuxi-alpha), ignored by others. Without them a time-aware "
        "model takes the given items as happening at the request time",
    )
    request_time: Timestamp | None = Field(
        None,
        description="Unix seconds of the request (the server's clock if absent); read only by models "
        "trained with request_time=true",
    )
    filters: Filters = Filters()
    ranking: Ranking = Field("score", description="'expected_value' = P(engage) x value x P(continue)")

    @model_validator(mode="after")
    def _needs_someone(self) -> Self:
        if self.user_id is None and not self.history:
            raise ValueError("give user_id, a non-empty history, or both")
        return self

    @model_validator(mode="after")
    def _times_fit_history(self) -> Self:
        times = self.history_timestamps
        if times is not None:
            n = len(self.history or ())
            if len(times) != n:
                raise ValueError(
                    f"history_timestamps: {len(times)} values for {n} history items; give one each"
                )
            back = next((i for i in range(1, n) if times[i] < times[i - 1]), None)
            if back is not None:
                raise ValueError(
                    f"history_timestamps must be non-decreasing (history is oldest first): "
                    f"[{back}] = {_seconds(times[back])} is before [{back - 1}] = {_seconds(times[back - 1])}"
                )
            if self.request_time is not None and n and self.request_time < times[-1]:
                raise ValueError(
                    f"request_time {_seconds(self.request_time)} is before the last history timestamp "
                    f"{_seconds(times[-1])}"
                )
        return self


class Exploration(_Body):
    """How the final list is drawn from the eligible candidates: ``off`` (top-k), ``epsilon`` or ``softmax``.

    Written as ``"off"``, ``"epsilon:0.1"`` or ``"softmax:1.0"`` on the command line and in requests.
    """

    model_config = ConfigDict(frozen=True, strict=True, allow_inf_nan=False)

    policy: Literal["off", "epsilon", "softmax"] = "off"
    epsilon: float = Field(0.1, ge=0, le=1, description="epsilon-greedy: chance of a uniform pick per slot")
    temperature: float = Field(1.0, gt=0, description="softmax: temperature of softmax(score / T)")

    @classmethod
    def parse(cls, spec: str) -> Exploration:
        """``"off"``, ``"epsilon:E"`` (E in [0, 1]) or ``"softmax:T"`` (T > 0)."""
        policy, _, param = spec.strip().partition(":")
        if policy == "off" and not param:
            return cls()
        try:
            value = float(param)
        except ValueError:
            value = float("nan")
        if policy == "epsilon" and 0 <= value <= 1:
            return cls(policy="epsilon", epsilon=value)
        if policy == "softmax" and 0 < value < float("inf"):
            return cls(policy="softmax", temperature=value)
        raise ValueError(
            f"exploration {spec!r}: expected 'off', 'epsilon:E' (0 <= E <= 1) or 'softmax:T' (T > 0)"
        )

    @property
    def spec(self) -> str:
        """The string form accepted by :meth:`parse`."""
        if self.policy == "off":
            return "off"
        return f"epsilon:{self.epsilon:g}" if self.policy == "epsilon" else f"softmax:{self.temperature:g}"


def _exploration(value: object) -> object:
    return Exploration.parse(value) if isinstance(value, str) else value


class RecommendRequest(_Target):
    k: int = Field(10, ge=1, le=MAX_K, strict=True, description=f"number of items, 1..{MAX_K}")
    exploration: Annotated[Exploration, BeforeValidator(_exploration)] | None = Field(
        None,
        description="'off', 'epsilon:E' or 'softmax:T' (or the object); overrides the service default",
    )
    exploration_seed: int | None = Field(
        None, ge=0, description="seed of this request's exploration draw (random if absent)"
    )


class ScoredItem(BaseModel):
    item_id: Id
    score: float
    distance_km: float | None = None
    position: int | None = Field(None, description="0-based slot in its list")
    propensity: float | None = Field(
        None, description="P(this item at this slot | items above it) under exploration; absent without"
    )


class _Served(BaseModel):
    request_id: str
    model_version: str
    experiment: str | None = Field(None, description="the experiment that chose the model, if any")
    variant: str | None = None
    fallback: bool
    fallback_reason: str | None = None
    unknown_items: list[Id] = Field(description="history ids the model does not know (ignored)")


class RecommendResponse(_Served):
    items: list[ScoredItem]
    exploration: str = Field("off", description="the logging policy that drew the list")
    n_eligible: int = Field(description="items that passed every filter")
    fewer_than_k: bool


class Carousel(_Body):
    name: Name
    category: Name | None = Field(None, description="only items of this category")
    filters: Filters | None = Field(
        None, description="extra rules for this carousel (ANDed with the slate's)"
    )


class SlateRequest(_Target):
    carousels: list[Carousel] = Field(min_length=1, max_length=50)
    k: int = Field(10, ge=1, le=100, strict=True, description="items per carousel")
    allow_duplicates: bool = Field(False, description="let an item appear in several carousels")
    rank_carousels: bool = Field(True, description="order carousels by their value to the user")

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [c.name for c in self.carousels]
        if len(set(names)) != len(names):
            raise ValueError(f"carousel names must be unique, got {names}")
        return self


class CarouselResult(BaseModel):
    name: str
    score: float = Field(description="discounted sum of its items' scores (what orders the carousels)")
    items: list[ScoredItem]
    n_eligible: int
    fewer_than_k: bool


class SlateResponse(_Served):
    carousels: list[CarouselResult]


class Event(_Body):
    user_id: Id
    event: Name = Field(description="'exposure' or an interaction type ('click', 'purchase', ...)")
    item_id: Id | None = None
    timestamp: Timestamp | None = Field(
        None, description=f"Unix seconds in [{EARLIEST}, {LATEST}]; the server's clock if absent"
    )
    value: float = Field(1.0, description="amount (e.g. revenue); 1 for a count")
    propensity: float | None = Field(None, ge=0, le=1)
    request_id: Annotated[str, StringConstraints(max_length=128)] | None = None
    experiment: Name | None = None
    variant: Name | None = None


class EventsRequest(_Body):
    events: list[Event] = Field(
        min_length=1, max_length=MAX_EVENTS, description="at most the service's --max-events-per-request"
    )


class EventsResponse(BaseModel):
    accepted: int
    interactions: int = Field(description="events that extended a user's history")


class SwapRequest(_Body):
    model_dir: str = Field(min_length=1, max_length=4096)
    variant: Name | None = Field(None, description="'experiment/variant' to swap that variant's model")


class SwapResponse(BaseModel):
    model_version: str
    previous_version: str


class Health(BaseModel):
    status: str
    model_version: str | None = None
    variants: dict[str, str] = {}
    store: str | None = None


class SimilarRequest(_Body):
    """Items similar to one item (a product page's carousel); no user needed."""

    item_id: Id
    k: int = Field(10, ge=1, le=MAX_K, strict=True, description=f"number of items, 1..{MAX_K}")
    filters: Filters = Field(
        default_factory=lambda: Filters(exclude_seen=False),
        description="business rules as in /recommend (there is no user, so nothing is 'seen')",
    )


class SimilarResponse(BaseModel):
    request_id: str
    model_version: str
    item_id: Id
    items: list[ScoredItem]
    n_eligible: int = Field(description="items the filters allowed (the item itself excluded)")
