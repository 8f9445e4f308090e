"""Item-centred reads: similar items and popular lists."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Request, get, post
from litestar.exceptions import ValidationException
from litestar.params import QueryParameter

from recsys_serving.contract import OptionalBodyOperation
from recsys_serving.controllers.deps import errors, service_of
from recsys_serving.controllers.recommend import RULES_DOC
from recsys_serving.schemas import (
    MAX_EXCLUDED_ITEMS,
    MAX_PRICE,
    MAX_RULE_CATEGORIES,
    IdParam,
    PopularResponse,
    Rules,
    SimilarRequest,
    SimilarResponse,
)
from recsys_serving.settings import MAX_RECOMMENDATIONS

NParam = Annotated[int, QueryParameter(ge=1, le=MAX_RECOMMENDATIONS)]
_ID_LIST = r"^[0-9]{1,16}(,[0-9]{1,16})*$"


def _id_list(what: str, most: int):
    return Annotated[
        str | None,
        QueryParameter(
            description=f"{what}: comma-separated ids, at most {most}",
            pattern=_ID_LIST,
            max_length=17 * most,
        ),
    ]


_LISTS = ("categories", "exclude_categories", "exclude_items", "exclude_seen", "boost_categories")
PriceParam = Annotated[float | None, QueryParameter(ge=0.0, le=MAX_PRICE)]


def rules_from_query(raw: dict) -> Rules:
    """The query parameters of GET /popular as the same Rules type the POST bodies use (so one
    validator for both); comma lists split here, the 400 names the parameter."""
    fields = {}
    for name, value in raw.items():
        if value is None:
            continue
        if name in _LISTS:
            value = value.split(",") if value else []
        fields[name] = value
    boost = {k[6:]: fields.pop(k) for k in list(fields) if k.startswith("boost_")}
    if boost:
        fields["boost"] = boost
    try:
        return msgspec.convert(fields, Rules, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        path = text.rpartition("at `$.")[2].split("`")[0].split("[")[0]
        key = "boost_" + path.split(".", 1)[1] if path.startswith("boost.") else path
        key = "boost_factor" if key == "boost" else key
        raise ValidationException(
            detail=f"Invalid rule: {key}: {text}",
            extra=[{"key": key or "query", "message": text, "source": "query"}],
        ) from exc


class ItemsController(Controller):
    path = "/api/v1"
    tags = ["items"]

    # the path is matched as text and parsed by IdParam: "abc" or "-3" get a 400 naming the field
    @post(
        "/similar/{item_id:str}",
        status_code=200,
        summary="Items similar to one item (body optional)",
        description="The item's neighbour list (else its category's popular list)." + RULES_DOC,
        responses=errors(404, 503),
        operation_class=OptionalBodyOperation,
    )
    async def similar(
        self, item_id: IdParam, request: Request, data: SimilarRequest | None = None
    ) -> SimilarResponse:
        service = service_of(request)
        d = data or SimilarRequest()
        return await service.similar(item_id, d.n_recommendations, d.model, d.rules, d.user_id)

    @get(
        "/popular",
        summary="Most popular items, optionally within a category",
        description=(
            "The rules are query parameters named as the fields of the Rules schema, lists "
            "comma-separated (`categories=3,7`), the boost flattened (`boost_factor=2&"
            "boost_categories=3`); `user_id` is needed by `exclude_seen` only. Unavailable items "
            "are left out unless `include_unavailable=true`. With `category_id` the answer stays "
            "in that category (topped up from the global list filtered to it)."
        ),
        responses=errors(404, 503),
    )
    async def popular(
        self,
        request: Request,
        category_id: IdParam | None = None,
        n: NParam = 10,
        user_id: IdParam | None = None,
        include_unavailable: bool = False,
        categories: _id_list("only these categories (or below)", MAX_RULE_CATEGORIES) = None,
        exclude_categories: _id_list("not these categories", MAX_RULE_CATEGORIES) = None,
        price_min: PriceParam = None,
        price_max: PriceParam = None,
        exclude_items: _id_list("never these items", MAX_EXCLUDED_ITEMS) = None,
        exclude_seen: Annotated[
            str | None,
            QueryParameter(
                description="events whose items the user had are left out, comma-separated",
                pattern=r"^(view|addtocart|transaction)(,(view|addtocart|transaction)){0,2}$",
            ),
        ] = None,
        boost_factor: Annotated[float | None, QueryParameter(gt=0.0, le=100.0)] = None,
        boost_categories: _id_list("boosted categories", MAX_RULE_CATEGORIES) = None,
        boost_price_min: PriceParam = None,
        boost_price_max: PriceParam = None,
    ) -> PopularResponse:
        rules = None
        raw = {
            "include_unavailable": include_unavailable or None,
            "categories": categories,
            "exclude_categories": exclude_categories,
            "price_min": price_min,
            "price_max": price_max,
            "exclude_items": exclude_items,
            "exclude_seen": exclude_seen,
            "boost_factor": boost_factor,
            "boost_categories": boost_categories,
            "boost_price_min": boost_price_min,
            "boost_price_max": boost_price_max,
        }
        if any(v is not None for v in raw.values()):
            rules = rules_from_query(raw)
        return await service_of(request).popular(category_id, n, rules, user_id)
