"""The in-process list cache: counters, Redis memory, flush (admin)."""

from __future__ import annotations

from litestar import Controller, Request, get, post
from redis.exceptions import RedisError

from recsys_serving.controllers.deps import ADMIN_ERRORS, admin_guard, errors, service_of
from recsys_serving.schemas import CacheFlushResponse, CacheStats


class CacheController(Controller):
    path = "/api/v1/cache"
    tags = ["cache"]

    @get("/stats", summary="Hits, misses, hit rate, keys and Redis memory")
    async def stats(self, request: Request) -> CacheStats:
        store = service_of(request).store
        s = store.cache.stats()
        mem = keys = version = None
        try:
            info = await store.redis.info("memory")
            keys = await store.redis.dbsize()
            mem = info
            version = (await store.state()).current
        except RedisError:
            pass
        return CacheStats(
            **s,
            version=version,
            redis_used_memory=int(mem["used_memory"]) if mem else None,
            redis_used_memory_human=str(mem["used_memory_human"]) if mem else None,
            redis_keys=keys,
        )

    @post(
        "/flush",
        status_code=200,
        guards=[admin_guard],
        summary="Empty the list cache (admin)",
        responses=errors(*ADMIN_ERRORS),
    )
    async def flush(self, request: Request) -> CacheFlushResponse:
        store = service_of(request).store
        flushed = store.cache.clear()
        try:  # other workers flush on the channel message
            await store.reader.announce("flush")
        except RedisError:
            pass
        return CacheFlushResponse(flushed=flushed)
