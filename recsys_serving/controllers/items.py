"""Item-centred reads: similar items, popular lists, a user's recent history."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.params import Parameter

from recsys_serving.controllers.deps import Service
from recsys_serving.schemas import (
    HistoryResponse,
    PopularResponse,
    SimilarRequest,
    SimilarResponse,
)
from recsys_serving.settings import MAX_RECOMMENDATIONS

IdParam = Annotated[int, Parameter(ge=0, le=2**53)]
NParam = Annotated[int, Parameter(ge=1, le=MAX_RECOMMENDATIONS)]


class ItemsController(Controller):
    path = "/api/v1"
    tags = ["items"]

    @post("/similar/{item_id:int}", status_code=200, summary="Items similar to one item")
    async def similar(
        self,
        item_id: IdParam,
        service: Service,
        data: SimilarRequest | None = None,
    ) -> SimilarResponse:
        data = data or SimilarRequest()
        return await service.similar(item_id, data.n_recommendations, data.model)

    @get("/popular", summary="Most popular items, optionally within a category")
    async def popular(
        self,
        service: Service,
        category_id: Annotated[int | None, Parameter(ge=0, le=2**53)] = None,
        n: NParam = 10,
    ) -> PopularResponse:
        return await service.popular(category_id, n)

    @get("/users/{user_id:int}/history", summary="A user's recent events, newest first")
    async def history(
        self, user_id: IdParam, service: Service, n: Annotated[int, Parameter(ge=1, le=50)] = 50
    ) -> HistoryResponse:
        return await service.history(user_id, n)
