"""Feedback events for the online A/B loop, appended to the ``{prefix}:feedback`` stream."""

from __future__ import annotations

from litestar import Controller, Request, post

from recsys_serving.controllers.deps import errors, service_of
from recsys_serving.schemas import FeedbackRequest, FeedbackResponse


class FeedbackController(Controller):
    path = "/api/v1/feedback"
    tags = ["feedback"]

    @post(
        "/",
        status_code=202,
        summary="Record an impression/click/addtocart/transaction",
        responses=errors(503),
    )
    async def feedback(self, data: FeedbackRequest, request: Request) -> FeedbackResponse:
        out = await service_of(request).feedback(
            data.user_id, data.item_id, data.event, data.model, data.rank, data.timestamp
        )
        return FeedbackResponse(**out)
