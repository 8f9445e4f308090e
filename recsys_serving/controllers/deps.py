"""Dependencies and guards shared by the controllers."""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from recsys_serving.service import RecommenderService, field_error
from recsys_serving.store import RecsysStore

Service = NamedDependency[RecommenderService]
Store = NamedDependency[RecsysStore]


def provide_service(state: State) -> RecommenderService:
    return state.service


def provide_store(state: State) -> RecsysStore:
    return state.store


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
