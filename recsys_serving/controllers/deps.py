"""Dependencies and guards shared by the controllers."""

from __future__ import annotations

import hmac
import re
from typing import TypeVar

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import (
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.params import JSONBody

from recsys_serving.service import RecommenderService, field_error
from recsys_serving.store import RecsysStore

T = TypeVar("T")
Service = NamedDependency[RecommenderService]
Store = NamedDependency[RecsysStore]


def provide_service(state: State) -> RecommenderService:
    return state.service


def service_of(request: Request) -> RecommenderService:
    """The service without dependency injection (a few microseconds on the hot endpoints)."""
    return request.app.state.service


def body_doc(schema: type) -> dict[str, Provide]:
    """Document ``schema`` as the request body in /schema without Litestar parsing it.

    Litestar coerces types (``"11"`` becomes 11) when it fills a ``data`` argument, and parsing
    twice costs time on the hot path; handlers read the body with :func:`strict_body` instead.
    Litestar's OpenAPI generator takes the body schema from a ``data`` parameter of any
    dependency of the handler; this one is never called because no handler asks for it.
    """

    async def body(data) -> None:  # pragma: no cover - documentation only
        raise AssertionError("documentation-only dependency")

    body.__annotations__ = {"data": JSONBody[schema], "return": None}
    return {"request_body": Provide(body)}


def provide_store(state: State) -> RecsysStore:
    return state.store


_AT_FIELD = re.compile(r"at `\$\.([A-Za-z_][A-Za-z0-9_]*)")
_NAMED_FIELD = re.compile(r"field `([^`]+)`")


async def strict_body(request: Request, schema: type[T], *, optional: bool = False) -> T:
    """Decode the JSON body strictly: ``"11"`` is not an int (Litestar itself coerces it).

    Errors are 400s naming the field, shaped like Litestar's own validation errors.
    """
    raw = await request.body()
    if optional and not raw.strip():
        return schema()
    try:
        return msgspec.json.decode(raw, type=schema)
    except msgspec.ValidationError as exc:
        text = str(exc)
        found = _AT_FIELD.search(text) or _NAMED_FIELD.search(text)
        key = found.group(1) if found else "body"
        raise ValidationException(
            detail=f"Validation failed for {request.method} {request.url.path}: {key}: {text}",
            extra=[{"key": key, "message": text, "source": "body"}],
        ) from exc
    except msgspec.DecodeError as exc:
        raise ValidationException(detail=f"JSON is malformed: {exc}") from exc


def path_id(raw: str, name: str) -> int:
    """A non-negative integer id from a path segment; 400 naming the parameter otherwise."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 16 or int(raw) > 2**53:
        raise field_error(name, f"must be a non-negative integer id, got {raw!r}", "path")
    return int(raw)


def admin_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Admin endpoints need ``Authorization: Bearer $RECSYS_ADMIN_TOKEN``; refused when unset."""
    token = connection.app.state.settings.admin_token
    if not token:
        raise PermissionDeniedException(
            "admin endpoints are disabled: RECSYS_ADMIN_TOKEN is not set on the server"
        )
    scheme, _, given = connection.headers.get("authorization", "").partition(" ")
    ok = hmac.compare_digest(given.strip().encode(), token.encode())
    if scheme.lower() != "bearer" or not ok:
        raise NotAuthorizedException(
            "admin token required: send 'Authorization: Bearer <RECSYS_ADMIN_TOKEN>'"
        )
