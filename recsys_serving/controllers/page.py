"""The server-rendered recommendations page (no JavaScript, no external resources)."""

from __future__ import annotations

from litestar import Controller, Request, get
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import FromQuery
from litestar.response import Template
from redis.exceptions import RedisError

from recsys_serving.controllers.deps import service_of
from recsys_serving.store import NotPublished


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


class PageController(Controller):
    path = "/"
    include_in_schema = False

    @get("/", summary="Recommendations page")
    async def index(
        self,
        request: Request,
        user_id: FromQuery[str | None] = None,
        model: FromQuery[str | None] = None,
        item_id: FromQuery[str | None] = None,
        n: FromQuery[str | None] = None,
    ) -> Template:
        service = service_of(request)
        ctx: dict = {"user_id": user_id or "", "model": model or "", "error": None}
        status = 200
        try:
            uid = _parse_id(user_id, "user id")
            iid = _parse_id(item_id, "item id")
            count = min(_parse_id(n, "n") or 12, 100)
            if count < 1:
                raise ValueError("n must be at least 1")
            info = await service.models()
            ctx["info"] = info
            chosen = model if model in {m.name for m in info.models} else None
            if model and chosen is None:
                raise ValueError(f"model {model!r} is not published")
            if uid is not None:
                ctx["recs"] = await service.recommend(uid, count, chosen)
                ctx["history"] = await service.history(uid, 20)
            if iid is not None:
                sim_model = chosen if chosen and _has_similar(info, chosen) else None
                ctx["similar"] = await service.similar(iid, count, sim_model)
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
        return Template(template_name="index.html", context=ctx, status_code=status)


def _has_similar(info, name: str) -> bool:
    return any(m.name == name and m.has_similar for m in info.models)
