"""The service's view of Redis: the served version, per-version data and an LRU of decoded lists.

Published versions never change, so everything decoded from one (meta, vocabularies, bucket
bounds, item table, lists) is cached in process keyed by version; a session network (GRU4Rec's
weights) is held keyed by its digest, so a version or a rollback that serves the same network
does not load it again. Only the small pointer/control
state can change; it is trusted for ``state_ttl`` seconds and re-read at once when the pub/sub
channel announces a new version, a rollback or an admin change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import msgspec
import numpy as np
from redis.asyncio import Redis
from redis.exceptions import RedisError

from recsys_serving.cache import LRUCache
from recsys_serving.gru_live import LiveGru
from recsys_serving.redis_layout import (
    HIST_FAMILY,
    ItemTable,
    LayoutReader,
    LayoutState,
    bucket_of,
    decode_history,
    decode_list,
    decode_pairs,
    rec_family,
    sim_family,
    validate_experiment,
)
from recsys_serving.redis_layout.clients import async_client, subscriber
from recsys_serving.rules import CatalogRules, Overrides
from recsys_serving.settings import Settings

log = logging.getLogger(__name__)
_ABSENT = False  # cached marker for "no list for this id" (None means "not cached")
# Session networks held at once: the served one and the one before it (a rollback or a switch
# back costs no reload). At scale 1.0 one is ~215 MB of float32.
LIVE_NETWORKS = 2


class NotPublished(Exception):
    """Nothing has been published under the prefix yet."""


def make_redis(settings: Settings) -> Redis:
    """An asyncio client (one server or a cluster, per REDIS_URL) with short timeouts, so a dead
    Redis fails requests fast (no retries on one server)."""
    return async_client(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_timeout,
    )


@dataclass
class VersionData:
    """Decoded, immutable parts of one published version (filled lazily)."""

    version: str
    meta: dict
    families: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    items: ItemTable | None = None
    rules: CatalogRules | None = None  # built with ``items``, once per version
    rulesets: OrderedDict = field(default_factory=OrderedDict)  # compiled rules, by their JSON
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    models: dict[str, dict] = field(init=False)
    popular_categories: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        self.models = {m["name"]: m for m in self.meta["models"]}
        self.popular_categories = frozenset(self.meta["popular_categories"])


@dataclass(frozen=True)
class Snapshot:
    """What one request serves from: pointers, version data and the resolved overrides."""

    state: LayoutState
    data: VersionData
    default_model: str
    experiment: dict | None
    overrides: Overrides = Overrides()


class ListView(msgspec.Struct, gc=False):
    """A cached list under one set of rules (``key``, b"" for the defaults) and one generation
    of the item overrides: the qualifying items in answer order, and the rows built from them."""

    key: bytes
    generation: str | None
    items: np.ndarray
    scores: np.ndarray
    removed: dict  # rule -> count; str -> int only, so never tracked either
    boosted: np.ndarray | None = None  # per item: did the boost lift it
    rows: tuple | None = None  # scalar-only Structs: untracked after one collection


class ServedList(msgspec.Struct, gc=False):
    """A decoded list in the LRU, with its views under rules (and their rows) built on first use.

    Not tracked by the garbage collector (``gc=False``; it holds arrays and a tuple of scalar
    Structs, never a cycle): a full LRU would otherwise add its entries to every full collection,
    which stops the event loop for all requests in flight.
    """

    items: np.ndarray
    scores: np.ndarray
    source: str = "personal"  # or how a fallback list was made ("session", "popular")
    plain: ListView | None = None  # the list under the default rules (see service.py)
    ruled: ListView | None = None  # ... under the last other rules it was asked with


class RecsysStore:
    """Cached reads of the published layout for one service process."""

    def __init__(self, redis: Redis, settings: Settings):
        self.redis = redis
        self.settings = settings
        self.reader = LayoutReader(redis, settings.prefix)
        self.cache = LRUCache(settings.cache_size)
        self._state: LayoutState | None = None
        self._state_at = 0.0
        self._state_lock = asyncio.Lock()
        self._versions: OrderedDict[str, VersionData] = OrderedDict()
        self._snapshot: Snapshot | None = None
        self._overrides = Overrides()
        self._overrides_lock = asyncio.Lock()
        self._networks: OrderedDict[str, LiveGru] = OrderedDict()
        self._networks_lock = asyncio.Lock()
        self.network_loads = 0
        self.pubsub_connected = False
        self.notifications = 0
        self._stopping = False

    # --- pointer and control state ------------------------------------------------------------
    def invalidate(self) -> None:
        self._state = None

    async def state(self) -> LayoutState:
        """Pointers and overrides; re-read when older than the TTL or invalidated."""
        st = self._state
        if st is not None and time.monotonic() - self._state_at < self.settings.state_ttl:
            return st
        async with self._state_lock:  # one refresh for a burst of requests
            st = self._state
            if st is not None and time.monotonic() - self._state_at < self.settings.state_ttl:
                return st
            st = await self.reader.state()
            self._state, self._state_at = st, time.monotonic()
            return st

    async def current(self) -> tuple[LayoutState, VersionData]:
        snap = await self.snapshot()
        return snap.state, snap.data

    async def snapshot(self) -> Snapshot:
        """The served version with its default model and experiment, resolved once per state."""
        st = await self.state()
        snap = self._snapshot
        if snap is not None and snap.state is st:
            return snap
        if st.current is None:
            raise NotPublished(f"nothing published under prefix {self.settings.prefix!r} yet")
        vd = await self.version(st.current)
        overrides = await self.overrides(st)
        snap = Snapshot(st, vd, self.default_model(st, vd), self.experiment(st, vd), overrides)
        self._snapshot = snap
        return snap

    async def overrides(self, st: LayoutState) -> Overrides:
        """The live item overrides; the hash is read again only when its generation changed."""
        got = self._overrides
        if got.generation == st.overrides_generation:
            return got
        async with self._overrides_lock:
            got = self._overrides
            if got.generation != st.overrides_generation:
                got = Overrides.from_hash(await self.reader.item_overrides())
                self._overrides = got
        return got

    async def version(self, version: str) -> VersionData:
        vd = self._versions.get(version)
        if vd is None:
            meta = await self.reader.meta(version)
            if meta is None:
                self.invalidate()
                raise NotPublished(f"version {version} has no meta (deleted or incomplete)")
            vd = self._versions.setdefault(version, VersionData(version, meta))
            while len(self._versions) > 3:  # current, previous and one being switched to
                self._versions.popitem(last=False)
        return vd

    def default_model(self, st: LayoutState, vd: VersionData) -> str:
        override = st.default_override()
        return override if override in vd.models else vd.meta["default_model"]

    def experiment(self, st: LayoutState, vd: VersionData) -> dict | None:
        """The active A/B experiment: admin override, else environment, else the bundle's."""
        for source, exp in (
            ("control", st.ab_override()),
            ("RECSYS_AB_EXPERIMENT", self.settings.ab_experiment),
            ("bundle", vd.meta.get("ab_experiment")),
        ):
            if exp:
                try:
                    return validate_experiment(exp, vd.models, source)
                except ValueError as exc:  # arms not in this version: serve without it
                    log.warning("ignoring A/B experiment: %s", exc)
                    return None
        return None

    # --- per-version data ---------------------------------------------------------------------
    async def family(self, vd: VersionData, family: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(bucket bounds, vocabulary) of a family, or None when the version lacks it."""
        if family not in vd.meta["families"]:
            return None
        got = vd.families.get(family)
        if got is None:
            async with vd.lock:
                got = vd.families.get(family)
                if got is None:
                    bounds = await self.reader.bounds(vd.version, family)
                    vocab = await self.reader.vocab(vd.version, family)
                    got = vd.families[family] = (bounds, vocab)
        return got

    async def items(self, vd: VersionData) -> ItemTable:
        if vd.items is None:  # once per version
            async with vd.lock:
                if vd.items is None:
                    table = await self.reader.items(vd.version)
                    vd.rules = CatalogRules(table)
                    vd.items = table
        return vd.items

    async def catalog_rules(self, vd: VersionData) -> CatalogRules:
        if vd.rules is None:
            await self.items(vd)
        return vd.rules

    async def popular_many(self, vd: VersionData, categories: list[int]) -> list:
        """Popular lists of several categories (LRU first, the rest in one HMGET)."""
        out = [self.cache.get((vd.version, "popular", c)) for c in categories]
        missing = [i for i, got in enumerate(out) if got is None]
        if missing:
            raw = await self.reader.popular_many(vd.version, [categories[i] for i in missing])
            for i, value in zip(missing, raw, strict=True):
                out[i] = decode_pairs(value) if value else _ABSENT
                self.cache.put((vd.version, "popular", categories[i]), out[i])
        return [v if v is not _ABSENT else None for v in out]

    async def _lists(self, vd: VersionData, family: str, idents: list[int]) -> list:
        """Decoded payloads for ids of one family (LRU first, the rest in one round trip)."""
        fam = await self.family(vd, family)
        if fam is None:
            return [None] * len(idents)
        bounds, vocab = fam
        out: list = []
        missing: list[int] = []
        for ident in idents:  # a request's handful of ids
            got = self.cache.get((vd.version, family, ident))
            out.append(got)
            if got is None:
                missing.append(len(out) - 1)
        if missing:
            wanted = [(bucket_of(bounds, idents[i]), idents[i]) for i in missing]
            if len(wanted) == 1:
                found = [await self.reader.lookup(vd.version, family, *wanted[0])]
            else:
                found = await self.reader.lookup_many(vd.version, family, wanted)
            for i, raw in zip(missing, found, strict=True):
                if raw is None:
                    value = _ABSENT
                elif family == HIST_FAMILY:
                    value = decode_history(raw)
                else:
                    value = ServedList(*decode_list(raw, vocab))
                self.cache.put((vd.version, family, idents[i]), value)
                out[i] = value
        return [v if v is not _ABSENT else None for v in out]

    async def user_list(self, vd: VersionData, model: str, user_id: int) -> ServedList | None:
        """The user's personal list for ``model``, or None."""
        return (await self._lists(vd, rec_family(model), [user_id]))[0]

    async def similar_lists(self, vd: VersionData, model: str, item_ids: list[int]) -> list:
        return await self._lists(vd, sim_family(model), item_ids)

    async def history(self, vd: VersionData, user_id: int):
        """(items, event codes, timestamps) newest first, or None."""
        return (await self._lists(vd, HIST_FAMILY, [user_id]))[0]

    async def live_gru(self, vd: VersionData, model: str) -> LiveGru:
        """The session network of ``model`` in this version, loaded from Redis once."""
        spec = vd.models[model]["gru"]
        key = spec["digest"]
        got = self._networks.get(key)
        if got is None:
            async with self._networks_lock:  # a burst of first requests loads it once
                got = self._networks.get(key)
                if got is None:
                    try:
                        arrays = await self.reader.weights(vd.version, model, spec)
                        got = await asyncio.to_thread(LiveGru.from_arrays, arrays)
                    except ValueError as exc:  # keys gone: the version was deleted meanwhile
                        self.invalidate()
                        raise NotPublished(f"session network of {model!r}: {exc}") from exc
                    self._networks[key] = got
                    self.network_loads += 1
                    while len(self._networks) > LIVE_NETWORKS:
                        self._networks.popitem(last=False)
        self._networks.move_to_end(key)
        return got

    async def popular(self, vd: VersionData, category: int | None):
        key = (vd.version, "popular", category)
        got = self.cache.get(key)
        if got is None:
            raw = await self.reader.popular(vd.version, category)
            got = decode_pairs(raw) if raw else _ABSENT
            self.cache.put(key, got)
        return got if got is not _ABSENT else None

    # --- pub/sub ------------------------------------------------------------------------------
    def on_message(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else str(data)
        self.notifications += 1
        if text == "flush":
            self.cache.clear()
        else:  # "version:<v>", "rollback:<v>", "control"
            self.invalidate()

    def stop(self) -> None:
        """Ask :meth:`listen` to return (cancellation alone can be lost, see there)."""
        self._stopping = True

    async def listen(self) -> None:
        """Follow the channel until :meth:`stop`; reconnect after Redis outages.

        The loop also checks a flag because on Python 3.11 a cancellation that lands while
        redis-py's read timeout fires is turned into that timeout and lost.
        """
        channel = self.reader.keys.channel
        while not self._stopping:
            pubsub = subscriber(self.redis)
            try:
                await pubsub.subscribe(channel)
                self.pubsub_connected = True
                self.invalidate()  # messages may have been missed while disconnected
                while not self._stopping:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        self.on_message(msg["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.debug("pub/sub disconnected: %s", exc)
            finally:
                self.pubsub_connected = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            if not self._stopping:
                await asyncio.sleep(1.0)
