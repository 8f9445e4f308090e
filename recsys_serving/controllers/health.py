"""Liveness and readiness: Redis reachable, version served, models."""

from __future__ import annotations

from litestar import Controller, Request, Response, get
from litestar.openapi import ResponseSpec
from redis.exceptions import RedisError

from recsys_serving.controllers.deps import service_of
from recsys_serving.schemas import HealthResponse
from recsys_serving.store import NotPublished


class HealthController(Controller):
    path = "/api/v1/health"
    tags = ["health"]

    @get(
        "/",
        summary="ok (200) or degraded (503) with the reason",
        responses={503: ResponseSpec(HealthResponse, description="Degraded, with the reason")},
    )
    async def health(self, request: Request) -> Response[HealthResponse]:
        store = service_of(request).store
        try:
            await store.redis.ping()
        except (RedisError, OSError) as exc:
            store.invalidate()
            body = HealthResponse("degraded", False, detail=f"Redis unreachable: {exc}")
            return Response(body, status_code=503)
        try:
            st, vd = await store.current()
        except NotPublished as exc:
            body = HealthResponse("degraded", True, pubsub=store.pubsub_connected, detail=str(exc))
            return Response(body, status_code=503)
        except RedisError as exc:
            return Response(HealthResponse("degraded", False, detail=str(exc)), status_code=503)
        body = HealthResponse(
            status="ok",
            redis=True,
            version=st.current,
            previous=st.previous,
            models=list(vd.models),
            default_model=store.default_model(st, vd),
            pubsub=store.pubsub_connected,
        )
        return Response(body, status_code=200)
