"""Recommendations: personal (with A/B arms), cold start and session based."""

from __future__ import annotations

from litestar import Controller, Request, post
from litestar.params import JSONBody

from recsys_serving.controllers.deps import Service, strict_body
from recsys_serving.schemas import ColdRequest, RecommendRequest, RecommendResponse, SessionRequest

# ``data`` documents the body in /schema; ``strict_body`` re-reads it without type coercion.


class RecommendController(Controller):
    path = "/api/v1/recommend"
    tags = ["recommend"]

    @post("/", status_code=200, summary="Top-N for a user (cold-start answer when unknown)")
    async def recommend(
        self, request: Request, data: JSONBody[RecommendRequest], service: Service
    ) -> RecommendResponse:
        d = await strict_body(request, RecommendRequest)
        return await service.recommend(d.user_id, d.n_recommendations, d.model)

    @post("/cold", status_code=200, summary="No history: popular, per category or around items")
    async def cold(
        self, request: Request, data: JSONBody[ColdRequest], service: Service
    ) -> RecommendResponse:
        d = await strict_body(request, ColdRequest)
        return await service.cold(d.n_recommendations, d.category_id, d.item_ids, d.model)

    @post("/session", status_code=200, summary="From recently viewed item ids (newest last)")
    async def session(
        self, request: Request, data: JSONBody[SessionRequest], service: Service
    ) -> RecommendResponse:
        d = await strict_body(request, SessionRequest)
        return await service.session(d.item_ids, d.n_recommendations, d.model, d.user_id)
