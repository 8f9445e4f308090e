"""Recommendations: personal (with A/B arms), cold start and session based."""

from __future__ import annotations

from litestar import Controller, Request, post

from recsys_serving.controllers.deps import errors, service_of
from recsys_serving.schemas import ColdRequest, RecommendRequest, RecommendResponse, SessionRequest


class RecommendController(Controller):
    path = "/api/v1/recommend"
    tags = ["recommend"]

    @post(
        "/",
        status_code=200,
        summary="Top-N for a user (cold-start answer when unknown)",
        responses=errors(404, 503),
    )
    async def recommend(self, data: RecommendRequest, request: Request) -> RecommendResponse:
        return await service_of(request).recommend(data.user_id, data.n_recommendations, data.model)

    @post(
        "/cold",
        status_code=200,
        summary="No history: popular, per category or around items",
        responses=errors(404, 503),
    )
    async def cold(self, data: ColdRequest, request: Request) -> RecommendResponse:
        return await service_of(request).cold(
            data.n_recommendations, data.category_id, data.item_ids, data.model
        )

    @post(
        "/session",
        status_code=200,
        summary="From recently viewed item ids (newest last)",
        responses=errors(404, 503),
    )
    async def session(self, data: SessionRequest, request: Request) -> RecommendResponse:
        return await service_of(request).session(
            data.item_ids, data.n_recommendations, data.model, data.user_id
        )
