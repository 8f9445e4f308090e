"""User-centred reads: a user's recent history."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, get
from litestar.params import QueryParameter

from recsys_serving.controllers.deps import errors, service_of
from recsys_serving.schemas import HistoryResponse, IdParam


class UsersController(Controller):
    path = "/api/v1/users"
    tags = ["users"]

    @get(
        "/{user_id:str}/history",
        summary="A user's recent events, newest first",
        responses=errors(503),
    )
    async def history(
        self,
        user_id: IdParam,
        request: Request,
        n: Annotated[int, QueryParameter(ge=1, le=50)] = 50,
    ) -> HistoryResponse:
        return await service_of(request).history(user_id, n)
