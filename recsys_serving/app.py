"""The Litestar application: ``create_app()`` builds it, ``app`` is what ASGI servers load.

litestar --app recsys_serving.app:app run        # or: uvicorn recsys_serving.app:app
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from litestar import Litestar, MediaType, Request, Response
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.routes import HTTPRoute
from litestar.template import TemplateConfig
from redis.exceptions import RedisError

from recsys_serving.contract import OPENAPI_PLUGINS, TYPE_DECODERS, StrictRequest
from recsys_serving.controllers.availability import ItemOverridesController
from recsys_serving.controllers.cache import CacheController
from recsys_serving.controllers.feedback import FeedbackController
from recsys_serving.controllers.health import HealthController
from recsys_serving.controllers.items import ItemsController
from recsys_serving.controllers.models import ExperimentController, ModelsController
from recsys_serving.controllers.page import PageController
from recsys_serving.controllers.recommend import RecommendController
from recsys_serving.controllers.users import UsersController
from recsys_serving.pages import PublishedPages, format_value
from recsys_serving.redis_layout.clients import aclose as aclose_redis
from recsys_serving.service import RecommenderService
from recsys_serving.settings import Settings
from recsys_serving.store import NotPublished, RecsysStore, make_redis

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).parent / "templates"


def _redis_down(_: Request, exc: Exception) -> Response:
    return Response(
        {"status_code": 503, "detail": f"Redis unavailable: {exc.__class__.__name__}: {exc}"},
        status_code=503,
        media_type=MediaType.JSON,
    )


def _not_published(_: Request, exc: Exception) -> Response:
    return Response({"status_code": 503, "detail": str(exc)}, status_code=503)


def _format_time(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d\u00a0%H:%M")


def _template_engine(engine: JinjaTemplateEngine) -> None:
    engine.engine.filters["datetime"] = _format_time
    engine.engine.filters["fmt"] = format_value


def _repair_options_allow(app: Litestar) -> None:
    """Make every automatic ``OPTIONS`` answer list all methods of its path.

    Litestar 2.25 builds a path's OPTIONS handler when the first handler of the path is
    registered and keeps it when more methods join (``OPTIONS /api/v1/experiment`` answered
    ``Allow: DELETE, OPTIONS``); the handler is rebuilt here from the finished route.
    """
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "OPTIONS" not in route.route_handler_map:
            continue
        handler, _ = route.route_handler_map["OPTIONS"]
        if handler.handler_name != "options_handler":  # not Litestar's automatic one
            continue
        allow = ", ".join(sorted(route.methods))

        def options_handler(scope, _allow: str = allow) -> Response:
            return Response(
                None, status_code=204, headers={"Allow": _allow}, media_type="text/plain"
            )

        handler._fn = options_handler


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the service for ``settings`` (default: from the environment). No I/O until startup."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        redis = make_redis(settings)
        store = RecsysStore(redis, settings)
        app.state.store = store
        app.state.service = RecommenderService(store)
        app.state.pages = PublishedPages(redis, settings.prefix)
        listener = asyncio.create_task(store.listen()) if settings.listen_pubsub else None
        # A full collection walks every tracked object, and the framework alone is ~70k of them
        # (tens of ms, measured as the p99 stalls of the serving benchmark). What exists now
        # lives as long as the process: move it out of the collector's view.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()  # back to the collector when the app stops (tests start many apps)
            if listener is not None:
                store.stop()
                listener.cancel()
                await asyncio.wait({listener}, timeout=2.0)
            with contextlib.suppress(Exception):
                await aclose_redis(redis)

    app = Litestar(
        route_handlers=[
            HealthController,
            RecommendController,
            ItemsController,
            UsersController,
            ModelsController,
            ExperimentController,
            CacheController,
            ItemOverridesController,
            FeedbackController,
            PageController,
        ],
        request_class=StrictRequest,
        type_decoders=TYPE_DECODERS,
        plugins=OPENAPI_PLUGINS,
        lifespan=[lifespan],
        state=State({"settings": settings}),
        exception_handlers={RedisError: _redis_down, NotPublished: _not_published},
        openapi_config=OpenAPIConfig(
            title="recsys serving",
            version="1.0.0",
            path="/schema",
            description="Recommendations served from the versions the Dagster graph publishes.",
        ),
        template_config=TemplateConfig(
            directory=TEMPLATES, engine=JinjaTemplateEngine, engine_callback=_template_engine
        ),
    )
    _repair_options_allow(app)
    return app


app = create_app()
