"""Item-centred reads: similar items and popular lists."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, get, post
from litestar.params import QueryParameter

from recsys_serving.contract import OptionalBodyOperation
from recsys_serving.controllers.deps import errors, service_of
from recsys_serving.schemas import (
    IdParam,
    PopularResponse,
    SimilarRequest,
    SimilarResponse,
)
from recsys_serving.settings import MAX_RECOMMENDATIONS

NParam = Annotated[int, QueryParameter(ge=1, le=MAX_RECOMMENDATIONS)]


class ItemsController(Controller):
    path = "/api/v1"
    tags = ["items"]

    # the path is matched as text and parsed by IdParam: "abc" or "-3" get a 400 naming the field
    @post(
        "/similar/{item_id:str}",
        status_code=200,
        summary="Items similar to one item (body optional)",
        responses=errors(404, 503),
        operation_class=OptionalBodyOperation,
    )
    async def similar(
        self, item_id: IdParam, request: Request, data: SimilarRequest | None = None
    ) -> SimilarResponse:
        service = service_of(request)
        d = data or SimilarRequest()
        return await service.similar(item_id, d.n_recommendations, d.model)

    @get(
        "/popular",
        summary="Most popular items, optionally within a category",
        responses=errors(404, 503),
    )
    async def popular(
        self,
        request: Request,
        category_id: IdParam | None = None,
        n: NParam = 10,
    ) -> PopularResponse:
        return await service_of(request).popular(category_id, n)
