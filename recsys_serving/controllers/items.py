"""Item-centred reads: similar items, popular lists, a user's recent history."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from recsys_serving.controllers.deps import Service, path_id
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
    @post("/similar/{item_id:str}", status_code=200, summary="Items similar to one item")
    async def similar(
        self, item_id: FromPath[str], service: Service, data: JSONBody[SimilarRequest | None] = None
    ) -> SimilarResponse:
        data = data or SimilarRequest()
        item = path_id(item_id, "item_id")
        return await service.similar(item, data.n_recommendations, data.model)

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
