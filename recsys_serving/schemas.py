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


# --- business rules (one type for every endpoint: a ``rules`` object in POST bodies, the same
# names as query parameters of GET /popular; see recsys_serving.rules) -------------------------
MAX_EXCLUDED_ITEMS = 500  # a shop's "not these" list: a basket, a page already shown
MAX_RULE_CATEGORIES = 100
MAX_PRICE = 1e9
Price = Annotated[float, Meta(ge=0.0, le=MAX_PRICE, description=f"a price, 0..{MAX_PRICE:g}")]
Categories = Annotated[
    list[Id], Meta(max_length=MAX_RULE_CATEGORIES, description="category ids (an item matches "
                   "when its category or one of its ancestors is listed)")
]  # fmt: skip
SeenEvent = Literal["view", "addtocart", "transaction"]


class Boost(_In):
    """Multiply the score of the items that match (categories and/or a price band) by ``factor``
    before the final cut; the order within each source follows the boosted score."""

    factor: Annotated[float, Meta(gt=0.0, le=100.0, description="score multiplier, (0, 100]")]
    categories: Categories | None = None
    price_min: Price | None = None
    price_max: Price | None = None


class Rules(_In):
    """What may be shown, per request. Defaults: only ``include_unavailable`` false applies."""

    include_unavailable: Annotated[
        bool, Meta(description="also show items known to be unavailable (hidden ones never)")
    ] = False
    categories: Categories | None = None
    exclude_categories: Categories | None = None
    price_min: Price | None = None
    price_max: Price | None = None
    exclude_items: Annotated[
        list[Id], Meta(max_length=MAX_EXCLUDED_ITEMS, description="item ids never to show")
    ] | None = None  # fmt: skip
    exclude_seen: Annotated[
        list[SeenEvent],
        Meta(max_length=3, description="leave out items the user (user_id) had these events on"),
    ] | None = None  # fmt: skip
    boost: Boost | None = None


RulesField = Annotated[Rules | None, Meta(description="business rules (see Rules)")]


class RecommendRequest(_In):
    user_id: Id
    n_recommendations: N = 10
    model: ModelName | None = None
    rules: RulesField = None


class ColdRequest(_In):
    n_recommendations: N = 10
    category_id: Id | None = None
    item_ids: ItemIds | None = None
    model: ModelName | None = None
    user_id: Annotated[Id, Meta(description="only for rules.exclude_seen")] | None = None
    rules: RulesField = None


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
    rules: RulesField = None


class SimilarRequest(_In):
    n_recommendations: N = 10
    model: ModelName | None = None
    user_id: Annotated[Id, Meta(description="only for rules.exclude_seen")] | None = None
    rules: RulesField = None


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


RuleName = Literal[
    "hidden", "unavailable", "exclude_items", "exclude_seen", "categories", "exclude_categories",
    "price", "category_id",
]  # fmt: skip
TopUpSource = Literal["similar", "popular_category", "popular"]


class FilterReport(msgspec.Struct):
    """How the rules shaped the answer: candidates removed per rule (each counted under the first
    rule it failed, in the order of ``RuleName``), and which sources topped the answer up after
    the primary list, in the order used."""

    candidates: int  # candidates looked at, over all sources
    removed: dict[str, int]
    topped_up_from: list[TopUpSource]
    boosted: int = 0  # answered items whose score the boost multiplied


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
    filtering: FilterReport | None = None


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
    filtering: FilterReport | None = None


class PopularResponse(msgspec.Struct):
    version: str
    category_id: int | None
    source: Source
    items: list[Item]
    filtering: FilterReport | None = None


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


# --- live availability (admin) ---------------------------------------------------------------
OverrideState = Literal["unavailable", "available", "hidden"]


class ItemOverridesRequest(_In):
    """Set items' live state until the next change (publishes do not reset it); ``clear`` drops
    the override of items, so the published availability holds again."""

    unavailable: Annotated[list[Id], Meta(max_length=10_000)] = []
    available: Annotated[list[Id], Meta(max_length=10_000)] = []
    hidden: Annotated[list[Id], Meta(max_length=10_000)] = []
    clear: Annotated[list[Id], Meta(max_length=10_000)] = []


class ItemOverridesResponse(msgspec.Struct):
    generation: str | None
    count: int
    overrides: dict[str, OverrideState]  # item id (as text: a JSON object key) -> state
