"""Live item availability (admin): mark items unavailable, available or hidden between publishes.

Stored in Redis outside the versions (``{prefix}:item_overrides``), applied at answer time by
every worker, for every model and cached list, from the moment the change is written.
"""

from __future__ import annotations

from litestar import Controller, Request, delete, get, post

from recsys_serving.controllers.deps import ADMIN_ERRORS, admin_guard, errors, service_of
from recsys_serving.schemas import ItemOverridesRequest, ItemOverridesResponse


class ItemOverridesController(Controller):
    path = "/api/v1/items/overrides"
    tags = ["items"]
    guards = [admin_guard]

    @get("/", summary="The live item overrides (admin)", responses=errors(*ADMIN_ERRORS, 503))
    async def list_overrides(self, request: Request) -> ItemOverridesResponse:
        return await service_of(request).item_overrides()

    @post(
        "/",
        status_code=200,
        summary="Mark items unavailable, available or hidden, or clear them (admin)",
        description=(
            "Takes effect at once on every endpoint, model and cached list, until changed or "
            "cleared (a publish does not reset it). `unavailable`: left out unless a request "
            "sets `include_unavailable`; `available`: shown even if the bundle says "
            "unavailable; `hidden`: never shown; `clear`: back to the published state. An item "
            "named in several lists takes the strongest state (hidden, unavailable, available, "
            "clear)."
        ),
        responses=errors(*ADMIN_ERRORS, 503),
    )
    async def change_overrides(
        self, data: ItemOverridesRequest, request: Request
    ) -> ItemOverridesResponse:
        return await service_of(request).change_item_overrides(data)

    @delete(
        "/",
        status_code=200,
        summary="Drop every item override (admin)",
        responses=errors(*ADMIN_ERRORS, 503),
    )
    async def clear_overrides(self, request: Request) -> ItemOverridesResponse:
        return await service_of(request).clear_item_overrides()
