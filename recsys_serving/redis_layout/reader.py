"""The service's reader: pointers, control overrides and per-version data via ``redis.asyncio``.

The client is ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster`` (see
:mod:`.clients`). The pointers and overrides share the deployment slot, so :meth:`state` is one
round trip to one node either way; a version's bulk keys are spread over the slots, and reads of
several of them are non-transactional pipelines, which a cluster client splits per node.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from redis.exceptions import NoScriptError

from recsys_serving.redis_layout.clients import publish
from recsys_serving.redis_layout.codec import ItemTable, decode_items, decode_meta
from recsys_serving.redis_layout.keys import CONTROL_AB, Keys, control_default_field
from recsys_serving.redis_layout.scripts import LOOKUP_LUA
from recsys_serving.redis_layout.weights import decode_array

OVERRIDES_GENERATION = "generation"  # field of the overrides hash (item ids are digits)


def _text(v) -> str | None:
    return v.decode() if isinstance(v, bytes) else v


# --- async reader (the service) -------------------------------------------------------------------
@dataclass(frozen=True)
class LayoutState:
    """Pointers and admin overrides, read in one round trip."""

    current: str | None
    previous: str | None
    control: dict[str, str]
    overrides_generation: str | None = None  # changes with every change of the item overrides

    def default_override(self) -> str | None:
        return self.control.get(control_default_field(self.current)) if self.current else None

    def ab_override(self) -> dict | None:
        raw = self.control.get(CONTROL_AB)
        return json.loads(raw) if raw else None


class LayoutReader:
    """Reads published versions with a ``redis.asyncio.Redis`` client (bytes responses)."""

    def __init__(self, redis, prefix: str = "recsys"):
        self.redis = redis
        self.keys = Keys(prefix)
        self._lookup = redis.register_script(LOOKUP_LUA)

    async def state(self) -> LayoutState:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.current)
            pipe.get(self.keys.previous)
            pipe.hgetall(self.keys.control)
            pipe.hget(self.keys.item_overrides, OVERRIDES_GENERATION)
            cur, prev, control, generation = await pipe.execute()
        return LayoutState(
            _text(cur),
            _text(prev),
            {_text(k): _text(v) for k, v in (control or {}).items()},
            _text(generation),
        )

    async def meta(self, version: str) -> dict | None:
        raw = await self.redis.get(self.keys.meta(version))
        return decode_meta(raw) if raw else None

    async def vocab(self, version: str, family: str) -> np.ndarray:
        raw = await self.redis.get(self.keys.vocab(version, family))
        return np.frombuffer(raw or b"", "<i8")

    async def bounds(self, version: str, family: str) -> np.ndarray:
        raw = await self.redis.get(self.keys.bounds(version, family))
        return np.frombuffer(raw or b"", "<i8")

    async def lookup(self, version: str, family: str, bucket: int, ident: int) -> bytes | None:
        """The payload of ``ident`` in bucket ``bucket`` (from :func:`bucket_of`), or None."""
        if bucket < 0:
            return None
        key = self.keys.blob(version, family, bucket)
        return await self._lookup(keys=[key], args=[ident]) or None

    async def lookup_many(
        self, version: str, family: str, wanted: list[tuple[int, int]]
    ) -> list[bytes | None]:
        """Payloads of several (bucket, id) pairs in one round trip (per node on a cluster).

        EVALSHA is queued as a raw command: redis-py's ``Script`` would await a cluster pipeline
        (which empties it) and refuses EVALSHA there, and on one server it adds a SCRIPT EXISTS
        round trip per call. A server that lacks the script (restarted, failed over) answers
        NOSCRIPT; it is loaded (on every master of a cluster) and the pipeline sent again.
        """
        sha = self._lookup.sha
        for attempt in (1, 2):
            async with self.redis.pipeline(transaction=False) as pipe:
                for bucket, ident in wanted:
                    key = self.keys.blob(version, family, max(bucket, 0))
                    pipe.execute_command("EVALSHA", sha, 1, key, ident)
                found = await pipe.execute(raise_on_error=False)
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in found):
                await self.redis.script_load(LOOKUP_LUA)
                continue
            break
        for r in found:
            if isinstance(r, Exception):
                raise r
        return [r if r and b >= 0 else None for r, (b, _) in zip(found, wanted, strict=True)]

    async def popular(self, version: str, category: int | None) -> bytes | None:
        return await self.redis.hget(
            self.keys.popular(version), "all" if category is None else str(category)
        )

    async def popular_many(self, version: str, categories: list[int]) -> list[bytes | None]:
        if not categories:
            return []
        return await self.redis.hmget(self.keys.popular(version), [str(c) for c in categories])

    async def items(self, version: str) -> ItemTable:
        return decode_items(await self.redis.hgetall(self.keys.items(version)))

    async def weights(
        self, version: str, model: str, spec: dict, batch_bytes: int = 16 << 20
    ) -> dict[str, np.ndarray]:
        """A session network's arrays (spec from the model's meta entry), in fresh buffers.

        Read in pipelines of about ``batch_bytes``, so other requests' commands interleave on
        the shared connection pool while a large network loads.
        """
        wanted = [
            (name, c) for name, info in spec["arrays"].items() for c in range(int(info["chunks"]))
        ]
        per_batch = max(1, batch_bytes // int(spec["chunk_bytes"]))
        raw: dict[str, list] = {name: [] for name in spec["arrays"]}
        for a in range(0, len(wanted), per_batch):
            async with self.redis.pipeline(transaction=False) as pipe:
                for name, c in wanted[a : a + per_batch]:
                    pipe.get(self.keys.weights(version, model, name, c))
                got = await pipe.execute()
            for (name, _), value in zip(wanted[a : a + per_batch], got, strict=True):
                raw[name].append(value)
        return {
            name: decode_array(info, raw[name], f"version {version} model {model} {name}")
            for name, info in spec["arrays"].items()
        }

    async def set_default_model(self, version: str, model: str) -> None:
        await self.redis.hset(self.keys.control, control_default_field(version), model)
        await publish(self.redis, self.keys.channel, "control")

    async def set_ab_experiment(self, exp: dict | None) -> None:
        if exp is None:
            await self.redis.hdel(self.keys.control, CONTROL_AB)
        else:
            await self.redis.hset(self.keys.control, CONTROL_AB, json.dumps(exp))
        await publish(self.redis, self.keys.channel, "control")

    # --- live item overrides (one hash per deployment, outside the versions) -------------------
    async def item_overrides(self) -> dict:
        """The overrides hash: item id -> state, and the generation field."""
        return await self.redis.hgetall(self.keys.item_overrides)

    async def change_item_overrides(
        self, states: dict[int, str], clear: list[int], generation: str, clear_all: bool = False
    ) -> None:
        """Set and drop overrides, stamp a new generation, then tell the other workers.

        No MULTI (a cluster pipeline has none): the generation is written last, in the HSET of
        the new states, so a reader that sees it sees every change; one that reads between the
        commands sees the old generation, and the new one makes it read the hash again.
        """
        key = self.keys.item_overrides
        if clear_all:
            await self.redis.delete(key)
        if clear:
            await self.redis.hdel(key, *[str(i) for i in clear])
        mapping = {str(i): s for i, s in states.items()}
        mapping[OVERRIDES_GENERATION] = generation
        await self.redis.hset(key, mapping=mapping)
        await publish(self.redis, self.keys.channel, "overrides")

    async def announce(self, message: str) -> None:
        await publish(self.redis, self.keys.channel, message)

    async def append_feedback(self, fields: dict[str, str], maxlen: int) -> str:
        entry = await self.redis.xadd(self.keys.feedback, fields, maxlen=maxlen, approximate=True)
        return _text(entry)
