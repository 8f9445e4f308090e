"""Request and response bodies (msgspec: validated on the way in, documented in /schema)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from recsys_serving.settings import MAX_RECOMMENDATIONS

MAX_ID = 2**53  # ids are exact in a JSON number (a double) up to here
Id = Annotated[int, Meta(ge=0, le=MAX_ID, description="non-negative integer id")]
N = Annotated[int, Meta(ge=1, le=MAX_RECOMMENDATIONS, description=f"1..{MAX_RECOMMENDATIONS}")]
ModelName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
ItemIds = Annotated[list[Id], Meta(max_length=50)]
Source = Literal["personal", "popular", "popular_category", "session", "similar"]
FeedbackEvent = Literal["impression", "click", "view", "addtocart", "transaction"]


_ID_TEXT = re.compile(r"([0-9]{1,16})(?:\.0*)?")


class IdParam(int):
    """A non-negative integer id taken from a path segment or a query string, parsed strictly.

    Litestar converts such text to ``int`` leniently (``"1e3"`` passes); this type is parsed by
    :meth:`parse` (registered as a type decoder) and documented by
    :mod:`recsys_serving.contract` from the same ``MAX_ID``: an integer from 0 to ``MAX_ID``.
    Decimal digits only, optionally with the ``.0`` that JSON serialisers print for an integral
    number (JSON Schema counts 5.0 as an integer); no sign, exponent, ``_`` or non-ASCII digit.
    """

    @classmethod
    def parse(cls, _: type, raw: object) -> IdParam:
        text = str(raw)
        found = _ID_TEXT.fullmatch(text) if text.isascii() else None
        if found is None or int(found.group(1)) > MAX_ID:
            raise ValueError(f"must be a non-negative integer id up to {MAX_ID}, got {text!r}")
        return cls(found.group(1))


class _In(msgspec.Struct, forbid_unknown_fields=True):
    """Request bodies: unknown fields are refused (and documented as additionalProperties false)."""


class RecommendRequest(_In):
    user_id: Id
    n_recommendations: N = 10
    model: ModelName | None = None


class ColdRequest(_In):
    n_recommendations: N = 10
    category_id: Id | None = None
    item_ids: ItemIds | None = None
    model: ModelName | None = None


MAX_SESSION_ITEMS = 50  # as many as a user's history holds (MAX_HISTORY); more is a 400


class SessionRequest(_In):
    item_ids: Annotated[
        list[Id],
        Meta(
            min_length=1,
            max_length=MAX_SESSION_ITEMS,
            description="the session's item ids, oldest first (newest last)",
        ),
    ]
    n_recommendations: N = 10
    model: ModelName | None = None
    user_id: Id | None = None
    exclude_seen: Annotated[
        bool, Meta(description="leave the session's own items out of the answer")
    ] = True


class SimilarRequest(_In):
    n_recommendations: N = 10
    model: ModelName | None = None


class FeedbackRequest(_In):
    user_id: Id
    item_id: Id
    event: FeedbackEvent
    model: ModelName | None = None
    rank: Annotated[int, Meta(ge=1, le=1000)] | None = None
    timestamp: Annotated[int, Meta(ge=0)] | None = None  # Unix ms; server time when omitted


class DefaultModelRequest(_In):
    model: ModelName


class ExperimentRequest(_In):
    name: Annotated[str, Meta(min_length=1, max_length=64)]
    control: ModelName
    treatment: ModelName
    treatment_share: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.5


class ErrorBody(msgspec.Struct):
    """Every error answer (Litestar's shape); ``extra`` names the offending field when known."""

    status_code: int
    detail: str
    extra: list[dict[str, str]] | dict[str, str] | None = None


class Item(msgspec.Struct, gc=False):
    """One recommended item (scalars only: not tracked by the garbage collector)."""

    item_id: int
    score: float
    rank: int
    category_id: int | None = None
    price: float | None = None
    available: bool | None = None


class RecommendResponse(msgspec.Struct):
    version: str
    model: str | None
    model_version: str | None
    source: Source
    cold_start: bool
    recommendations: list[Item]
    user_id: int | None = None
    arm: str | None = None
    experiment: str | None = None


class SessionResponse(RecommendResponse):
    """A session answer; ``ignored_item_ids``: request items the answering model does not know
    (no network input, no neighbour list), so they did not count."""

    ignored_item_ids: list[int] = []


class SimilarResponse(msgspec.Struct):
    item_id: int
    version: str
    model: str | None
    model_version: str | None
    source: Source
    similar_items: list[Item]


class PopularResponse(msgspec.Struct):
    version: str
    category_id: int | None
    source: Source
    items: list[Item]


class HistoryEntry(msgspec.Struct):
    item_id: int
    event: str
    timestamp: int
    category_id: int | None = None
    price: float | None = None


class HistoryResponse(msgspec.Struct):
    user_id: int
    version: str
    known: bool
    events: list[HistoryEntry]


class ModelInfo(msgspec.Struct):
    name: str
    version: str
    trained_at: str
    metrics: dict
    params: dict
    n_users: int
    has_similar: bool
    is_default: bool
    live_session: bool = False  # a published network answers /recommend/session live


class ModelsResponse(msgspec.Struct):
    version: str
    previous: str | None
    created_at: str | None
    published_at: str | None
    default_model: str
    experiment: dict | None
    models: list[ModelInfo]


class FeedbackResponse(msgspec.Struct):
    id: str
    version: str | None
    model: str | None
    experiment: str | None
    arm: str | None


class HealthResponse(msgspec.Struct):
    status: Literal["ok", "degraded"]
    redis: bool
    version: str | None = None
    previous: str | None = None
    models: list[str] = msgspec.field(default_factory=list)
    default_model: str | None = None
    pubsub: bool = False
    detail: str | None = None


class CacheStats(msgspec.Struct):
    hits: int
    misses: int
    hit_rate: float
    keys: int
    capacity: int
    version: str | None
    redis_used_memory: int | None
    redis_used_memory_human: str | None
    redis_keys: int | None


class CacheFlushResponse(msgspec.Struct):
    flushed: int
