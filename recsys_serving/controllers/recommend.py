"""Recommendations: personal (with A/B arms), cold start and session based."""

from __future__ import annotations

from litestar import Controller, Request, post

from recsys_serving.controllers.deps import body_doc, service_of, strict_body
from recsys_serving.schemas import ColdRequest, RecommendRequest, RecommendResponse, SessionRequest


class RecommendController(Controller):
    path = "/api/v1/recommend"
    tags = ["recommend"]

    @post(
        "/",
        status_code=200,
        summary="Top-N for a user (cold-start answer when unknown)",
        dependencies=body_doc(RecommendRequest),
    )
    async def recommend(self, request: Request) -> RecommendResponse:
        d = await strict_body(request, RecommendRequest)
        return await service_of(request).recommend(d.user_id, d.n_recommendations, d.model)

    @post(
        "/cold",
        status_code=200,
        summary="No history: popular, per category or around items",
        dependencies=body_doc(ColdRequest),
    )
    async def cold(self, request: Request) -> RecommendResponse:
        d = await strict_body(request, ColdRequest)
        return await service_of(request).cold(
            d.n_recommendations, d.category_id, d.item_ids, d.model
        )

    @post(
        "/session",
        status_code=200,
        summary="From recently viewed item ids (newest last)",
        dependencies=body_doc(SessionRequest),
    )
    async def session(self, request: Request) -> RecommendResponse:
        d = await strict_body(request, SessionRequest)
        return await service_of(request).session(
            d.item_ids, d.n_recommendations, d.model, d.user_id
        )
