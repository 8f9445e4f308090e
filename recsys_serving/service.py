"""What each endpoint does, on top of :class:`RecsysStore` (controllers and the page are thin)."""

from __future__ import annotations

import asyncio
import hashlib
import time

import numpy as np
from litestar.exceptions import NotFoundException

from recsys_serving.bundle import EVENT_CODES
from recsys_serving.redis_layout import ItemTable
from recsys_serving.schemas import (
    HistoryEntry,
    HistoryResponse,
    Item,
    ModelInfo,
    ModelsResponse,
    PopularResponse,
    RecommendResponse,
    SessionResponse,
    SimilarResponse,
)
from recsys_serving.store import NotPublished, RecsysStore, ServedList, Snapshot, VersionData

SESSION_DECAY = 0.8  # weight of a viewed item halves about every three newer views


def not_published(field: str, message: str) -> NotFoundException:
    """A 404 naming the request field that refers to something the served version lacks.

    A well-formed name of a model that is not published is not a malformed request (400): like
    an unknown item or category, it names a resource that does not exist in this version.
    """
    return NotFoundException(
        detail=f"Not found: {field}: {message}",
        extra=[{"key": field, "message": message, "source": "body"}],
    )


def assign_arm(experiment: dict, user_id: int) -> str:
    """'treatment' or 'control', stable for (experiment name, user) across processes and runs."""
    digest = hashlib.blake2b(f"{experiment['name']}:{user_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2.0**64
    return "treatment" if u < experiment["treatment_share"] else "control"


def item_rows(table: ItemTable, items: np.ndarray, scores: np.ndarray) -> list[Item]:
    """Response items with catalogue metadata (unknown values as null)."""
    pos = table.lookup(items)
    known = pos >= 0
    p = np.where(known, pos, 0)
    cat = table.category[p] if len(table.ids) else np.zeros(len(items), np.int64)
    price = table.price[p] if len(table.ids) else np.full(len(items), np.nan, np.float32)
    avail = table.available[p] if len(table.ids) else np.full(len(items), -1, np.int8)
    cat_l = np.where(known & (cat >= 0), cat, -1).tolist()
    price_l = np.where(known, np.round(price.astype(np.float64), 2), np.nan).tolist()
    avail_l = np.where(known, avail, -1).tolist()
    score_l = np.round(scores.astype(np.float64), 6).tolist()
    return [
        Item(
            item_id=i,
            score=s,
            rank=r + 1,
            category_id=c if c >= 0 else None,
            price=pr if pr == pr else None,
            available=bool(a) if a >= 0 else None,
        )
        for r, (i, s, c, pr, a) in enumerate(
            zip(items.tolist(), score_l, cat_l, price_l, avail_l, strict=True)
        )
    ]


def cached_rows(table: ItemTable, lst: ServedList, n: int) -> list[Item]:
    """The first ``n`` response rows of a cached list, built once for at least 10."""
    if lst.rows is None or len(lst.rows) < min(n, len(lst.items)):
        k = max(n, 10)
        # a tuple of scalar-only Structs: the collector stops tracking it (see ServedList)
        lst.rows = tuple(item_rows(table, lst.items[:k], lst.scores[:k]))
    return list(lst.rows[:n])


def combine_neighbours(
    lists: list, weights: np.ndarray, exclude: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sum weighted neighbour scores over several items' similar lists; top ``n``."""
    parts = [(g.items, g.scores * w) for g, w in zip(lists, weights, strict=True) if g is not None]
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    items = np.concatenate([p[0] for p in parts])
    scores = np.concatenate([p[1] for p in parts]).astype(np.float64)
    uniq, inv = np.unique(items, return_inverse=True)
    total = np.bincount(inv, weights=scores, minlength=len(uniq))
    keep = ~np.isin(uniq, exclude)
    uniq, total = uniq[keep], total[keep]
    top = np.argsort(-total, kind="stable")[:n]
    return uniq[top], total[top].astype(np.float32)


class RecommenderService:
    """Endpoint logic; raises Litestar HTTP exceptions for client errors."""

    def __init__(self, store: RecsysStore):
        self.store = store
        # One network forward at a time: its scoring product reads the whole output layer
        # (210 MB at scale 1.0) and BLAS already spreads it over the cores; concurrent ones
        # only thrash (measured: 4 connections served 0.6x the requests/s of 1).
        self._network_turn = asyncio.Semaphore(1)

    @property
    def settings(self):
        return self.store.settings

    def _model(self, vd: VersionData, name: str, field: str = "model") -> dict:
        models = vd.models
        if name not in models:
            raise not_published(field, f"model {name!r} is not published (have {sorted(models)})")
        return models[name]

    def _similar_model(self, snap: Snapshot, requested: str | None) -> str | None:
        """The model whose neighbour lists answer item-based requests."""
        vd = snap.data
        if requested is not None:
            if not self._model(vd, requested)["has_similar"]:
                raise not_published("model", f"model {requested!r} has no similar-items lists")
            return requested
        default = snap.default_model
        if vd.models[default]["has_similar"]:
            return default
        return next((m for m, info in vd.models.items() if info["has_similar"]), None)

    async def _popular_response(
        self, vd: VersionData, n: int, category: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, str]:
        if category is not None:
            got = await self.store.popular(vd, category)
            if got is not None:
                return got[0][:n], got[1][:n], "popular_category"
        items, scores = await self.store.popular(vd, None) or (np.zeros(0, np.int64),) * 2
        return items[:n], scores[:n], "popular"

    async def _neighbour_answer(
        self, snap: Snapshot, item_ids: list[int], n: int, model: str | None, exclude_seen: bool
    ) -> tuple[np.ndarray, np.ndarray, str | None, list[int]]:
        """Recency-weighted sum of the items' neighbour lists: (items, scores, model, ids that
        have no list)."""
        sim_model = self._similar_model(snap, model)
        if sim_model is None:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), None, list(item_ids)
        lists = await self.store.similar_lists(snap.data, sim_model, item_ids)
        weights = SESSION_DECAY ** np.arange(len(item_ids))[::-1]  # newest (last) weighs 1
        exclude = np.asarray(item_ids) if exclude_seen else np.zeros(0, np.int64)
        items, scores = combine_neighbours(lists, weights, exclude, n)
        missing = [i for i, g in zip(item_ids, lists, strict=True) if g is None]
        return items, scores, sim_model, list(dict.fromkeys(missing))

    async def _session_items(
        self, snap: Snapshot, item_ids: list[int], n: int, model: str | None
    ) -> tuple[np.ndarray, np.ndarray, str | None]:
        items, scores, used, _ = await self._neighbour_answer(snap, item_ids, n, model, True)
        return items, scores, used

    def _live_model(self, snap: Snapshot, requested: str | None) -> str | None:
        """The model whose published network answers a session live, or None (neighbours).

        A requested model answers live when it has a network; with none requested, the default
        model when it has one, else the first published model that has one.
        """
        vd = snap.data
        if requested is not None:
            return requested if "gru" in self._model(vd, requested) else None
        if "gru" in vd.models[snap.default_model]:
            return snap.default_model
        return next((m for m, info in vd.models.items() if "gru" in info), None)

    async def recommend(self, user_id: int, n: int, model: str | None) -> RecommendResponse:
        """The hot path: a cache hit costs no Redis call and reuses the built rows."""
        snap = await self.store.snapshot()
        vd = snap.data
        arm = experiment = None
        if model is not None:
            self._model(vd, model)
        elif snap.experiment is not None:
            exp = snap.experiment
            arm, experiment = assign_arm(exp, user_id), exp["name"]
            model = exp[arm]
        else:
            model = snap.default_model
        got = await self.store.user_list(vd, model, user_id)
        table = vd.items or await self.store.items(vd)
        source, cold = "personal", False
        if got is not None:
            rows = cached_rows(table, got, n)
        else:
            cold = True
            fallback = await self._fallback(snap, user_id)
            rows, source = cached_rows(table, fallback, n), fallback.source
        return RecommendResponse(
            version=vd.version,
            model=model,
            model_version=vd.models[model]["version"],
            source=source,
            cold_start=cold,
            recommendations=rows,
            user_id=user_id,
            arm=arm,
            experiment=experiment,
        )

    async def _fallback(self, snap: Snapshot, user_id: int) -> ServedList:
        """A user without a published list: recent history as a session, else popular.

        Computed once per (version, neighbour model, user) for the longest list and kept in the
        LRU beside the published lists, so a returning unknown user costs what a known one does.
        """
        sim_model = self._similar_model(snap, None)
        key = (snap.data.version, "fallback", sim_model, user_id)
        got = self.store.cache.get(key)
        if got is not None:
            return got
        vd, longest = snap.data, self.settings.max_recommendations
        hist = await self.store.history(vd, user_id)
        items = np.zeros(0, np.int64)
        if hist is not None and len(hist[0]):
            recent = hist[0][:20][::-1].tolist()  # oldest .. newest
            items, scores, _ = await self._session_items(snap, recent, longest, None)
            source = "session"
        if not len(items):
            items, scores, source = await self._popular_response(vd, longest)
        got = ServedList(items, scores, source=source)
        self.store.cache.put(key, got)
        return got

    async def cold(
        self, n: int, category: int | None, item_ids: list[int] | None, model: str | None
    ) -> RecommendResponse:
        snap = await self.store.snapshot()
        vd = snap.data
        items = np.zeros(0, np.int64)
        used = None
        if item_ids:
            items, scores, used = await self._session_items(snap, item_ids, n, model)
            source = "similar"
        elif model is not None:
            self._model(vd, model)
        if not len(items):
            items, scores, source = await self._popular_response(vd, n, category)
        return RecommendResponse(
            version=vd.version,
            model=used,
            model_version=vd.models[used]["version"] if used else None,
            source=source,
            cold_start=True,
            recommendations=item_rows(await self.store.items(vd), items, scores),
        )

    async def session(
        self,
        item_ids: list[int],
        n: int,
        model: str | None,
        user_id: int | None,
        exclude_seen: bool = True,
    ) -> SessionResponse:
        """Next items after ``item_ids`` (oldest first): GRU4Rec live when one is published.

        The network runs in a worker thread (numpy releases the GIL in its products), so the
        ~10-20 ms of a full-catalogue scoring never stalls the other requests on the loop.
        """
        snap = await self.store.snapshot()
        vd = snap.data
        used = self._live_model(snap, model)
        if used is not None:
            network = await self.store.live_gru(vd, used)
            async with self._network_turn:
                got = await asyncio.to_thread(network.recommend, item_ids, n, exclude_seen)
            items, scores, ignored = got.items, got.scores, got.ignored
        else:
            items, scores, used, ignored = await self._neighbour_answer(
                snap, item_ids, n, model, exclude_seen
            )
        source = "session"
        if not len(items):
            items, scores, source = await self._popular_response(vd, n)
        return SessionResponse(
            version=vd.version,
            model=used,
            model_version=vd.models[used]["version"] if used else None,
            source=source,
            cold_start=source != "session",
            recommendations=item_rows(await self.store.items(vd), items, scores),
            user_id=user_id,
            ignored_item_ids=ignored,
        )

    async def similar(self, item_id: int, n: int, model: str | None) -> SimilarResponse:
        snap = await self.store.snapshot()
        vd = snap.data
        table = await self.store.items(vd)
        used = self._similar_model(snap, model)
        got = (await self.store.similar_lists(vd, used, [item_id]))[0] if used else None
        if got is not None:
            rows, source = cached_rows(table, got, n), "similar"
        else:
            pos = int(table.lookup(np.asarray([item_id]))[0])
            if pos < 0:
                raise NotFoundException(f"item {item_id} is not in the published catalogue")
            category = int(table.category[pos])
            items, scores, source = await self._popular_response(
                vd, n + 1, category if category >= 0 else None
            )
            keep = items != item_id
            rows = item_rows(table, items[keep][:n], scores[keep][:n])
        return SimilarResponse(
            item_id=item_id,
            version=vd.version,
            model=used,
            model_version=vd.models[used]["version"] if used else None,
            source=source,
            similar_items=rows,
        )

    async def popular(self, category: int | None, n: int) -> PopularResponse:
        _, vd = await self.store.current()
        if category is not None and category not in vd.popular_categories:
            raise NotFoundException(f"category {category} has no published popular list")
        items, scores, source = await self._popular_response(vd, n, category)
        return PopularResponse(
            version=vd.version,
            category_id=category,
            source=source,
            items=item_rows(await self.store.items(vd), items, scores),
        )

    async def history(self, user_id: int, n: int) -> HistoryResponse:
        _, vd = await self.store.current()
        got = await self.store.history(vd, user_id)
        if got is None:
            return HistoryResponse(user_id=user_id, version=vd.version, known=False, events=[])
        items, events, ts = (a[:n] for a in got)
        rows = item_rows(await self.store.items(vd), items, np.zeros(len(items), np.float32))
        return HistoryResponse(
            user_id=user_id,
            version=vd.version,
            known=True,
            events=[
                HistoryEntry(
                    item_id=r.item_id,
                    event=EVENT_CODES[e],
                    timestamp=t,
                    category_id=r.category_id,
                    price=r.price,
                )
                for r, e, t in zip(rows, events.tolist(), ts.tolist(), strict=True)
            ],
        )

    async def models(self) -> ModelsResponse:
        snap = await self.store.snapshot()
        st, vd, default = snap.state, snap.data, snap.default_model
        return ModelsResponse(
            version=vd.version,
            previous=st.previous,
            created_at=vd.meta.get("created_at"),
            published_at=vd.meta.get("published_at"),
            default_model=default,
            experiment=snap.experiment,
            models=[
                ModelInfo(
                    name=m["name"],
                    version=m["version"],
                    trained_at=m["trained_at"],
                    metrics=m["metrics"],
                    params=m["params"],
                    n_users=m["n_users"],
                    has_similar=m["has_similar"],
                    is_default=m["name"] == default,
                    live_session="gru" in m,
                )
                for m in vd.meta["models"]
            ],
        )

    async def set_default_model(self, model: str) -> ModelsResponse:
        _, vd = await self.store.current()
        self._model(vd, model)
        await self.store.reader.set_default_model(vd.version, model)
        self.store.invalidate()
        return await self.models()

    async def set_experiment(self, exp: dict | None) -> ModelsResponse:
        _, vd = await self.store.current()
        if exp is not None:
            for arm in ("control", "treatment"):
                self._model(vd, exp[arm], arm)
        await self.store.reader.set_ab_experiment(exp)
        self.store.invalidate()
        return await self.models()

    async def feedback(
        self, user_id: int, item_id: int, event: str, model: str | None, rank, ts
    ) -> dict:
        version = experiment = arm = None
        try:
            snap = await self.store.snapshot()
        except NotPublished:  # feedback is still worth keeping
            snap = None
        if snap is not None:
            version = snap.data.version
            exp = snap.experiment
            if exp is not None:
                arm, experiment = assign_arm(exp, user_id), exp["name"]
                model = model or exp[arm]
            model = model or snap.default_model
        fields = {
            "user_id": str(user_id),
            "item_id": str(item_id),
            "event": event,
            "timestamp": str(ts if ts is not None else int(time.time() * 1000)),
            "model": model or "",
            "version": version or "",
            "experiment": experiment or "",
            "arm": arm or "",
            "rank": "" if rank is None else str(rank),
        }
        entry = await self.store.reader.append_feedback(fields, self.settings.feedback_maxlen)
        return {
            "id": entry,
            "version": version,
            "model": model,
            "experiment": experiment,
            "arm": arm,
        }
