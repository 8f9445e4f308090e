"""Recommendations: personal (with A/B arms), cold start and session based."""

from __future__ import annotations

from litestar import Controller, Request, post

from recsys_serving.controllers.deps import errors, service_of
from recsys_serving.schemas import (
    ColdRequest,
    RecommendRequest,
    RecommendResponse,
    SessionRequest,
    SessionResponse,
)

RULES_DOC = (
    " Business rules go in `rules` (see the Rules schema): unavailable items are left out unless "
    "`include_unavailable` is true; the answer still has `n_recommendations` items when that "
    "many qualify (topped up from the model's neighbours, then category, then global "
    "popularity), and `filtering` says what each rule removed and what topped it up."
)


class RecommendController(Controller):
    path = "/api/v1/recommend"
    tags = ["recommend"]

    @post(
        "/",
        status_code=200,
        summary="Top-N for a user (cold-start answer when unknown)",
        description="A user's precomputed list (or a cold-start answer)." + RULES_DOC,
        responses=errors(404, 503),
    )
    async def recommend(self, data: RecommendRequest, request: Request) -> RecommendResponse:
        return await service_of(request).recommend(
            data.user_id, data.n_recommendations, data.model, data.rules
        )

    @post(
        "/cold",
        status_code=200,
        summary="No history: popular, per category or around items",
        description="Around `item_ids`, else a category's or the global popular list." + RULES_DOC,
        responses=errors(404, 503),
    )
    async def cold(self, data: ColdRequest, request: Request) -> RecommendResponse:
        return await service_of(request).cold(
            data.n_recommendations,
            data.category_id,
            data.item_ids,
            data.model,
            data.rules,
            data.user_id,
        )

    @post(
        "/session",
        status_code=200,
        summary="From recently viewed item ids (newest last)",
        description=(
            "When the served version publishes a GRU4Rec network, it runs live over the items "
            "(`model` null: the default model if it has a network, else the first that has one; "
            "a named model without a network answers from its neighbour lists, as do versions "
            "without any network). 1 to 50 items, oldest first: an empty or longer list is a "
            "400 naming `item_ids`. Items the answering model does not know are skipped and "
            "listed in `ignored_item_ids`; when none is known the answer is the popular list "
            "(`source` popular, `cold_start` true). The session's own items are left out "
            "unless `exclude_seen` is false." + RULES_DOC
        ),
        responses=errors(404, 503),
    )
    async def session(self, data: SessionRequest, request: Request) -> SessionResponse:
        return await service_of(request).session(
            data.item_ids,
            data.n_recommendations,
            data.model,
            data.user_id,
            data.exclude_seen,
            data.rules,
        )
