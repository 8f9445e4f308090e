"""Item-centred reads: similar items, popular lists, a user's recent history."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, get, post
from litestar.params import FromPath, QueryParameter

from recsys_serving.controllers.deps import Service, body_doc, path_id, service_of, strict_body
from recsys_serving.schemas import (
    HistoryResponse,
    PopularResponse,
    SimilarRequest,
    SimilarResponse,
)
from recsys_serving.settings import MAX_RECOMMENDATIONS

NParam = Annotated[int, QueryParameter(ge=1, le=MAX_RECOMMENDATIONS)]


class ItemsController(Controller):
    path = "/api/v1"
    tags = ["items"]

    # ids are taken as text so that "abc" or "-3" get a 400 naming the field, not a 404
    @post(
        "/similar/{item_id:str}",
        status_code=200,
        summary="Items similar to one item (body optional)",
        dependencies=body_doc(SimilarRequest),
    )
    async def similar(self, request: Request, item_id: FromPath[str]) -> SimilarResponse:
        item = path_id(item_id, "item_id")
        d = await strict_body(request, SimilarRequest, optional=True)
        return await service_of(request).similar(item, d.n_recommendations, d.model)

    @get("/popular", summary="Most popular items, optionally within a category")
    async def popular(
        self,
        service: Service,
        category_id: Annotated[int | None, QueryParameter(ge=0, le=2**53)] = None,
        n: NParam = 10,
    ) -> PopularResponse:
        return await service.popular(category_id, n)

    @get("/users/{user_id:str}/history", summary="A user's recent events, newest first")
    async def history(
        self,
        user_id: FromPath[str],
        service: Service,
        n: Annotated[int, QueryParameter(ge=1, le=50)] = 50,
    ) -> HistoryResponse:
        return await service.history(path_id(user_id, "user_id"), n)
