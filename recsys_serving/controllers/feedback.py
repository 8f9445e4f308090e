"""Feedback events for the online A/B loop, appended to the ``{prefix}:feedback`` stream."""

from __future__ import annotations

from litestar import Controller, Request, post

from recsys_serving.controllers.deps import body_doc, service_of, strict_body
from recsys_serving.schemas import FeedbackRequest, FeedbackResponse


class FeedbackController(Controller):
    path = "/api/v1/feedback"
    tags = ["feedback"]

    @post(
        "/",
        status_code=202,
        summary="Record an impression/click/addtocart/transaction",
        dependencies=body_doc(FeedbackRequest),
    )
    async def feedback(self, request: Request) -> FeedbackResponse:
        d = await strict_body(request, FeedbackRequest)
        out = await service_of(request).feedback(
            d.user_id, d.item_id, d.event, d.model, d.rank, d.timestamp
        )
        return FeedbackResponse(**out)
