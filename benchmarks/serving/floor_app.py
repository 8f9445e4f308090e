"""The framework floor: a Litestar app of the same kind as the service, with one empty endpoint."""

from litestar import Litestar, post


@post("/floor", status_code=200)
async def floor() -> dict:
    return {"ok": True}


app = Litestar(route_handlers=[floor])
