"""The server-rendered pages (no JavaScript, nothing loaded from elsewhere), with a shared nav:

    /                 Home: the data set at a glance and the system's status
    /analytics        funnel, RFM segments, weekday × hour activity, association rules
    /recommendations  a user's recommendations and history, similar items
    /experiments      leaderboard, A/B results, CTR by position, money, ablation

Home, Analytics and Experiments show what the graph's ``ui_reports`` asset published to Redis;
Recommendations asks the service as the REST endpoints do. The pages are not in the OpenAPI
document: they are HTML for people, not part of the API's contract.
"""

from __future__ import annotations

from litestar import Controller, Request, Response, get
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.params import FromQuery
from litestar.response import Template
from redis.exceptions import RedisError

from recsys_serving.controllers.deps import service_of
from recsys_serving.pages import PublishedPages
from recsys_serving.schemas import Rules
from recsys_serving.store import NotPublished

NAV = (
    ("home", "/", "Home"),
    ("analytics", "/analytics", "Analytics"),
    ("recommendations", "/recommendations", "Recommendations"),
    ("experiments", "/experiments", "Experiments"),
)
NOT_PUBLISHED = (
    "The graph has not published the reports of this page to Redis yet: materialise the "
    "ui_reports asset (make run does)."
)


def _parse_id(raw: str | None, name: str) -> int | None:
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip()
    if not text.isdigit():
        raise ValueError(f"{name} must be a non-negative integer, got {raw!r}")
    return int(text)


def _message(exc: HTTPException) -> str:
    extra = exc.extra if isinstance(exc.extra, list) else []
    return "; ".join(e.get("message", "") for e in extra if isinstance(e, dict)) or exc.detail


def pages_of(request: Request) -> PublishedPages:
    return request.app.state.pages


async def _serving_info(request: Request, ctx: dict) -> None:
    """The served version and its models, for the header and the Home page's status."""
    try:
        ctx["info"] = await service_of(request).models()
    except NotPublished as exc:
        ctx["serving_error"] = f"no serving version published yet ({exc})"
    except (RedisError, OSError) as exc:
        ctx["serving_error"] = f"Redis is unavailable: {exc}"


async def _report_page(request: Request, page: str, template: str) -> Template:
    ctx: dict = {"page": page, "nav": NAV, "doc": None, "error": None}
    status = 200
    try:
        ctx["doc"] = await pages_of(request).document(page)
        if ctx["doc"] is None:
            ctx["error"] = NOT_PUBLISHED
    except (RedisError, OSError) as exc:
        ctx["error"], status = f"Redis is unavailable: {exc}", 503
    if status == 200:
        await _serving_info(request, ctx)
    return Template(template_name=template, context=ctx, status_code=status)


class PageController(Controller):
    path = "/"
    include_in_schema = False

    @get("/", summary="Home page")
    async def home(
        self,
        request: Request,
        user_id: FromQuery[str | None] = None,
        model: FromQuery[str | None] = None,
        item_id: FromQuery[str | None] = None,
        n: FromQuery[str | None] = None,
        category: FromQuery[str | None] = None,
        show_unavailable: FromQuery[str | None] = None,
    ) -> Template:
        if user_id or item_id:
            # the recommendations page's address before it moved off the root: links made
            # then keep working, and the page's own links stay on the root
            return await recommendations_page(
                request, "/", user_id, model, item_id, n, category, show_unavailable
            )
        page = await _report_page(request, "home", "home.html")
        if page.status_code == 200:
            try:
                page.context["redis_ok"] = bool(await service_of(request).store.redis.ping())
            except (RedisError, OSError) as exc:
                page.context["redis_ok"], page.context["redis_error"] = False, str(exc)
        return page

    @get("/analytics", summary="Analytics page")
    async def analytics(self, request: Request) -> Template:
        return await _report_page(request, "analytics", "analytics.html")

    @get("/experiments", summary="Experiments page")
    async def experiments(self, request: Request) -> Template:
        return await _report_page(request, "experiments", "experiments.html")

    @get("/pages/charts/{publish:int}/{name:str}", summary="A chart of a published page")
    async def chart(self, request: Request, publish: int, name: str) -> Response[bytes]:
        png = await pages_of(request).chart(publish, name.removesuffix(".png"))
        if png is None:
            raise NotFoundException(f"no chart {name!r} in pages publish {publish}")
        # a publish never changes: its charts can be cached for as long as a browser likes
        return Response(
            png, media_type="image/png", headers={"Cache-Control": "public, max-age=86400"}
        )

    @get("/recommendations", summary="Recommendations page")
    async def recommendations(
        self,
        request: Request,
        user_id: FromQuery[str | None] = None,
        model: FromQuery[str | None] = None,
        item_id: FromQuery[str | None] = None,
        n: FromQuery[str | None] = None,
        category: FromQuery[str | None] = None,
        show_unavailable: FromQuery[str | None] = None,
    ) -> Template:
        return await recommendations_page(
            request, "/recommendations", user_id, model, item_id, n, category, show_unavailable
        )


async def recommendations_page(
    request: Request,
    here: str,
    user_id: str | None,
    model: str | None,
    item_id: str | None,
    n: str | None,
    category: str | None = None,
    show_unavailable: str | None = None,
) -> Template:
    """A user's recommendations and history, and similar items; links and the form point at
    ``here``, the address the page was opened at. ``category`` and ``show_unavailable`` (the
    checkbox, off by default) become the request's rules."""
    service = service_of(request)
    show = show_unavailable not in (None, "", "0", "false", "off")
    ctx: dict = {
        "page": "recommendations",
        "nav": NAV,
        "here": here,
        "user_id": user_id or "",
        "model": model or "",
        "error": None,
        "categories": [],
        "category": None,
        "show_unavailable": show,
        "filters": "",
    }
    status = 200
    try:
        uid = _parse_id(user_id, "user id")
        iid = _parse_id(item_id, "item id")
        count = min(_parse_id(n, "n") or 12, 100)
        if count < 1:
            raise ValueError("n must be at least 1")
        cat = _parse_id(category, "category")
        ctx["category"] = cat
        ctx["filters"] = (f"&category={cat}" if cat is not None else "") + (
            "&show_unavailable=1" if show else ""
        )
        info = await service.models()
        ctx["info"] = info
        ctx["categories"] = await service.categories()
        chosen = model if model in {m.name for m in info.models} else None
        if model and chosen is None:
            raise ValueError(f"model {model!r} is not published")
        rules = Rules(include_unavailable=show, categories=[cat] if cat is not None else None)
        if uid is not None:
            ctx["recs"] = await service.recommend(uid, count, chosen, rules)
            ctx["history"] = await service.history(uid, 20)
        if iid is not None:
            sim_model = chosen if chosen and _has_similar(info, chosen) else None
            ctx["similar"] = await service.similar(iid, count, sim_model, rules)
            ctx["item_id"] = iid
    except ValidationException as exc:  # before ValueError: Litestar's 4xx subclass it
        ctx["error"], status = _message(exc), 400
    except HTTPException as exc:
        ctx["error"], status = exc.detail, exc.status_code
    except ValueError as exc:
        ctx["error"], status = str(exc), 400
    except NotPublished as exc:
        ctx["error"], status = f"Nothing to serve yet: {exc}", 503
    except (RedisError, OSError) as exc:
        ctx["error"], status = f"Redis is unavailable: {exc}", 503
    return Template(template_name="recommendations.html", context=ctx, status_code=status)


def _has_similar(info, name: str) -> bool:
    return any(m.name == name and m.has_similar for m in info.models)
