"""What each endpoint does, on top of :class:`RecsysStore` (controllers and the page are thin)."""

from __future__ import annotations

import asyncio
import hashlib
import time

import msgspec
import numpy as np
from litestar.exceptions import NotFoundException, ValidationException

from recsys_serving.bundle import EVENT_CODES
from recsys_serving.redis_layout import ItemTable
from recsys_serving.rules import (
    CatalogRules,
    Overrides,
    RuleError,
    RuleSet,
    compile_rules,
    member,
    new_generation,
)
from recsys_serving.schemas import (
    FilterReport,
    HistoryEntry,
    HistoryResponse,
    Item,
    ItemOverridesRequest,
    ItemOverridesResponse,
    ModelInfo,
    ModelsResponse,
    PopularResponse,
    RecommendResponse,
    Rules,
    SessionResponse,
    SimilarResponse,
)
from recsys_serving.store import (
    ListView,
    NotPublished,
    RecsysStore,
    ServedList,
    Snapshot,
    VersionData,
)

SESSION_DECAY = 0.8  # weight of a viewed item halves about every three newer views
TOPUP_SEEDS = 5  # items of the answer whose neighbour lists top it up
TOPUP_CATEGORIES = 50  # category popular lists merged at most to top an answer up
RULESET_CACHE = 256  # compiled rule sets kept per version


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


def item_rows(
    table: ItemTable, items: np.ndarray, scores: np.ndarray, available: np.ndarray | None = None
) -> list[Item]:
    """Response items with catalogue metadata (unknown values as null); ``available``: live
    availability (overrides applied) instead of the published one."""
    pos = table.lookup(items)
    known = pos >= 0
    p = np.where(known, pos, 0)
    cat = table.category[p] if len(table.ids) else np.zeros(len(items), np.int64)
    price = table.price[p] if len(table.ids) else np.full(len(items), np.nan, np.float32)
    if available is not None:
        avail, known_avail = available, np.ones(len(items), bool)
    else:
        avail = table.available[p] if len(table.ids) else np.full(len(items), -1, np.int8)
        known_avail = known
    cat_l = np.where(known & (cat >= 0), cat, -1).tolist()
    price_l = np.where(known, np.round(price.astype(np.float64), 2), np.nan).tolist()
    avail_l = np.where(known_avail, avail, -1).tolist()
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


def live_rows(rules: CatalogRules, ov: Overrides, items: np.ndarray, scores: np.ndarray):
    return item_rows(rules.table, items, scores, rules.availability(items, ov))


def list_view(rs: RuleSet, ov: Overrides, lst: ServedList) -> ListView:
    """A cached list under ``rs``, kept on the list (one slot for the default rules, one for the
    last other rules) for the overrides generation it was made with. A hit costs no numpy, so a
    repeated answer is as cheap as before there were rules; new rules or a change of the
    overrides rebuild it on next use."""
    plain = rs.key == b""
    view = lst.plain if plain else lst.ruled
    if view is None or view.generation != ov.generation or view.key != rs.key:
        keep, removed = rs.filter(lst.items)
        items, scores = lst.items[keep], lst.scores[keep]
        boosted = None
        if rs.boost_factor is not None:
            order, boosted = rs.boost(items, scores)
            items, scores = items[order], scores[order]
        view = ListView(rs.key, ov.generation, items, scores, removed, boosted)
        if plain:
            lst.plain = view
        else:
            lst.ruled = view
    return view


def view_rows(catalog: CatalogRules, ov: Overrides, lst: ServedList, view: ListView, n: int):
    """The first ``n`` rows of a list view, or None when fewer than ``n`` qualify and the rules
    removed some (then the answer is topped up). Rows are built once for at least 10."""
    items = view.items
    if len(items) < n and view.removed:
        return None
    if view.rows is None or len(view.rows) < min(n, len(items)):
        k = max(n, 10)
        # a tuple of scalar-only Structs: the collector stops tracking it (see ServedList)
        view.rows = tuple(live_rows(catalog, ov, items[:k], view.scores[:k]))
    return list(view.rows[:n])


class Collector:
    """Fills an answer of ``n`` items from its sources in order, each filtered by the rules.

    The first source is the answer's own list (the model's precomputed list, the session's
    neighbours, ...); the next ones top it up while fewer than ``n`` qualify. Items a source
    repeats from an earlier one, and the request's own items (``seen``), are skipped without
    counting as removed. A boost reorders the qualifying items of each source before the cut.
    """

    def __init__(self, rs: RuleSet, n: int, seen: np.ndarray | None = None):
        self.rs, self.n = rs, n
        self.items: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.taken = 0
        self.candidates = 0
        self.boosted = 0
        self.removed: dict[str, int] = {}
        self.sources: list[str] = []
        self.seen = np.unique(seen) if seen is not None else np.zeros(0, np.int64)

    @property
    def full(self) -> bool:
        return self.taken >= self.n

    def add(self, items: np.ndarray, scores: np.ndarray, source: str | None = None) -> None:
        if self.full or not len(items):
            return
        fresh = items >= 0
        if len(self.seen):
            fresh &= ~member(self.seen, items)
        if not fresh.all():
            items, scores = items[fresh], scores[fresh]
        if self.taken or len(self.seen):  # later sources may repeat an item within themselves
            _, first = np.unique(items, return_index=True)
            if len(first) < len(items):
                first.sort()
                items, scores = items[first], scores[first]
        self.seen = np.union1d(self.seen, items)
        self.candidates += len(items)
        keep, removed = self.rs.filter(items)
        for name, count in removed.items():
            self.removed[name] = self.removed.get(name, 0) + count
        items, scores = items[keep], scores[keep]
        order, boosted = self.rs.boost(items, scores)
        want = self.n - self.taken
        items, scores, boosted = items[order][:want], scores[order][:want], boosted[:want]
        if len(items):
            self.items.append(items)
            self.scores.append(scores)
            self.taken += len(items)
            self.boosted += int(boosted.sum())
            if source is not None:
                self.sources.append(source)

    def answer(self) -> tuple[np.ndarray, np.ndarray, FilterReport]:
        items = np.concatenate(self.items) if self.items else np.zeros(0, np.int64)
        scores = np.concatenate(self.scores) if self.scores else np.zeros(0, np.float32)
        report = FilterReport(self.candidates, self.removed, self.sources, self.boosted)
        return items, scores, report


def rule_error(exc: RuleError, source: str = "body") -> ValidationException:
    return ValidationException(
        detail=f"Invalid rule: {exc.field}: {exc.message}",
        extra=[{"key": exc.field, "message": exc.message, "source": source}],
    )


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

    # --- rules and top-ups --------------------------------------------------------------------
    async def _ruleset(
        self,
        snap: Snapshot,
        rules: Rules | None,
        *,
        where: str = "rules.",
        user_id: int | None = None,
        scope: int | None = None,
    ) -> RuleSet:
        """The request's rules, checked against the served catalogue (400 naming the field)."""
        vd = snap.data
        catalog = await self.store.catalog_rules(vd)
        history = None
        # rules that do not depend on the user are compiled once per version and overrides
        # generation (a shop sends the same few rule sets again and again)
        key = None
        if rules is None:
            key = (snap.overrides.generation, where, scope, b"")
        elif not rules.exclude_seen:
            key = (snap.overrides.generation, where, scope, msgspec.json.encode(rules))
        if key is not None:
            got = vd.rulesets.get(key)
            if got is not None:
                return got
        if rules is not None and rules.exclude_seen and user_id is not None:
            got = await self.store.history(vd, user_id)
            history = (got[0], got[1]) if got is not None else None
        try:
            rs = compile_rules(
                rules,
                catalog,
                snap.overrides,
                where=where,
                history=history,
                has_user=user_id is not None,
                scope=scope,
            )
        except RuleError as exc:
            raise rule_error(exc, "body" if where else "query") from exc
        if key is not None:
            rs.key = b"" if rs.plain else key[3]
            vd.rulesets[key] = rs
            while len(vd.rulesets) > RULESET_CACHE:
                vd.rulesets.popitem(last=False)
        return rs

    async def _fill(
        self,
        snap: Snapshot,
        rs: RuleSet,
        n: int,
        items: np.ndarray,
        scores: np.ndarray,
        topups,
        *,
        cached: ServedList | None = None,
        seen: np.ndarray | None = None,
    ) -> tuple[list[Item], FilterReport]:
        """Rows of ``n`` qualifying items: the answer's own list first, then, when the rules
        removed some and fewer than ``n`` are left, the sources of ``topups()`` in order."""
        catalog, ov = snap.data.rules, snap.overrides
        if cached is not None and rs.key is not None:  # the hot path: no numpy on a hit
            view = list_view(rs, ov, cached)
            rows = view_rows(catalog, ov, cached, view, n)
            if rows is not None:
                boosted = int(view.boosted[:n].sum()) if view.boosted is not None else 0
                return rows, FilterReport(len(cached.items), view.removed, [], boosted)
        col = Collector(rs, n, seen)
        col.add(items, scores)
        if not col.full and col.removed:
            for source, fetch in topups():
                got = await fetch()
                if got is not None:
                    col.add(got[0], got[1], source)
                if col.full:
                    break
        items, scores, report = col.answer()
        return live_rows(catalog, ov, items, scores), report

    def _topups(
        self,
        snap: Snapshot,
        rs: RuleSet,
        *,
        seeds: np.ndarray | None = None,
        sim_model: str | None = None,
        context: np.ndarray | None = None,
        categories: list[int] | None = None,
        global_popular: bool = True,
    ) -> list:
        """(source, fetch) pairs that top an answer up: the neighbours of ``seeds`` (the
        answer's best items or the session's newest), then the popular lists of the requested
        categories (or of the categories of ``context`` items), then the global popular list."""
        vd = snap.data
        longest = self.settings.max_recommendations
        out: list = []
        if sim_model is not None and seeds is not None and len(seeds):
            ids = seeds[:TOPUP_SEEDS].tolist()

            async def similar():
                lists = await self.store.similar_lists(vd, sim_model, ids)
                weights = SESSION_DECAY ** np.arange(len(ids))  # the first seed weighs 1
                return combine_neighbours(lists, weights, np.zeros(0, np.int64), longest)

            out.append(("similar", similar))
        cats = self._topup_categories(vd, rs, context, categories)
        if cats:

            async def category():
                got = [g for g in await self.store.popular_many(vd, cats) if g is not None]
                if not got:
                    return None
                items = np.concatenate([g[0] for g in got])
                scores = np.concatenate([g[1] for g in got])
                order = np.argsort(-scores, kind="stable")
                return items[order], scores[order]

            out.append(("popular_category", category))
        if global_popular:

            async def popular():
                return await self.store.popular(vd, None)

            out.append(("popular", popular))
        return out

    @staticmethod
    def _topup_categories(
        vd: VersionData, rs: RuleSet, context: np.ndarray | None, categories: list[int] | None
    ) -> list[int]:
        """Categories whose popular lists may top up: those at or below the requested
        categories (or the endpoint's), else ``categories``, else the context items' ones."""
        catalog = vd.rules
        if rs.categories is not None:
            cats = catalog.descendants(rs.categories)
        elif rs.scope is not None:
            cats = catalog.descendants(rs.scope)
        elif categories:
            cats = np.asarray(categories, np.int64)
        elif context is not None and len(context):
            p, known = catalog.positions(np.asarray(context[:TOPUP_SEEDS], np.int64))
            cats = catalog.table.category[p][known] if len(catalog.table.ids) else p[:0]
        else:
            return []
        published = vd.popular_categories
        return [c for c in dict.fromkeys(cats.tolist()) if c in published][:TOPUP_CATEGORIES]

    def _topup_model(self, snap: Snapshot, model: str) -> str | None:
        """The neighbour lists that top up ``model``'s answers: its own, else the service's."""
        return model if snap.data.models[model]["has_similar"] else self._similar_model(snap, None)

    # --- endpoints ----------------------------------------------------------------------------
    async def recommend(
        self, user_id: int, n: int, model: str | None, rules: Rules | None = None
    ) -> RecommendResponse:
        """The hot path: a cache hit under the default rules costs no Redis call and reuses the
        built rows."""
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
        if vd.rules is None:
            await self.store.items(vd)
        rs = await self._ruleset(snap, rules, user_id=user_id)
        source, cold = "personal", False
        if got is None:
            cold = True
            got = await self._fallback(snap, user_id)
            source = got.source
        lst = got
        rows, report = await self._fill(
            snap,
            rs,
            n,
            lst.items,
            lst.scores,
            lambda: self._topups(
                snap,
                rs,
                seeds=lst.items,
                sim_model=self._topup_model(snap, model),
                context=lst.items,
                global_popular=source != "popular",
            ),
            cached=lst,
        )
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
            filtering=report,
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
        self,
        n: int,
        category: int | None,
        item_ids: list[int] | None,
        model: str | None,
        rules: Rules | None = None,
        user_id: int | None = None,
    ) -> RecommendResponse:
        snap = await self.store.snapshot()
        vd = snap.data
        rs = await self._ruleset(snap, rules, user_id=user_id)
        longest = self.settings.max_recommendations
        items = np.zeros(0, np.int64)
        used = None
        if item_ids:
            items, scores, used = await self._session_items(snap, item_ids, longest, model)
            source = "similar"
        elif model is not None:
            self._model(vd, model)
        if not len(items):
            items, scores, source = await self._popular_response(vd, longest, category)
        seeds = np.asarray(item_ids or [], np.int64)
        rows, report = await self._fill(
            snap,
            rs,
            n,
            items,
            scores,
            lambda: self._topups(
                snap,
                rs,
                context=seeds if len(seeds) else items,
                categories=[category] if category is not None else None,
                global_popular=source != "popular",
            ),
            seen=seeds if len(seeds) else None,
        )
        return RecommendResponse(
            version=vd.version,
            model=used,
            model_version=vd.models[used]["version"] if used else None,
            source=source,
            cold_start=True,
            recommendations=rows,
            filtering=report,
        )

    async def session(
        self,
        item_ids: list[int],
        n: int,
        model: str | None,
        user_id: int | None,
        exclude_seen: bool = True,
        rules: Rules | None = None,
    ) -> SessionResponse:
        """Next items after ``item_ids`` (oldest first): GRU4Rec live when one is published.

        The network runs in a worker thread (numpy releases the GIL in its products), so the
        ~10-20 ms of a full-catalogue scoring never stalls the other requests on the loop.
        The network and the neighbours give the longest list, so that rules still leave ``n``.
        """
        snap = await self.store.snapshot()
        vd = snap.data
        rs = await self._ruleset(snap, rules, user_id=user_id)
        longest = self.settings.max_recommendations
        used = self._live_model(snap, model)
        live = used is not None
        if live:
            network = await self.store.live_gru(vd, used)
            async with self._network_turn:
                got = await asyncio.to_thread(network.recommend, item_ids, longest, exclude_seen)
            items, scores, ignored = got.items, got.scores, got.ignored
        else:
            items, scores, used, ignored = await self._neighbour_answer(
                snap, item_ids, longest, model, exclude_seen
            )
        source = "session"
        if not len(items):
            items, scores, source = await self._popular_response(vd, longest)
        newest_first = np.asarray(item_ids[::-1], np.int64)
        sim_model = self._similar_model(snap, None) if live else None
        rows, report = await self._fill(
            snap,
            rs,
            n,
            items,
            scores,
            lambda: self._topups(
                snap,
                rs,
                seeds=newest_first,
                sim_model=sim_model,
                context=newest_first,
                global_popular=source != "popular",
            ),
            seen=newest_first if exclude_seen else None,
        )
        return SessionResponse(
            version=vd.version,
            model=used,
            model_version=vd.models[used]["version"] if used else None,
            source=source,
            cold_start=source != "session",
            recommendations=rows,
            user_id=user_id,
            ignored_item_ids=ignored,
            filtering=report,
        )

    async def similar(
        self,
        item_id: int,
        n: int,
        model: str | None,
        rules: Rules | None = None,
        user_id: int | None = None,
    ) -> SimilarResponse:
        snap = await self.store.snapshot()
        vd = snap.data
        table = await self.store.items(vd)
        used = self._similar_model(snap, model)
        rs = await self._ruleset(snap, rules, user_id=user_id)
        got = (await self.store.similar_lists(vd, used, [item_id]))[0] if used else None
        longest = self.settings.max_recommendations
        if got is not None:
            items, scores, source = got.items, got.scores, "similar"
            context = got.items
        else:
            pos = int(table.lookup(np.asarray([item_id]))[0])
            if pos < 0:
                raise NotFoundException(f"item {item_id} is not in the published catalogue")
            category = int(table.category[pos])
            items, scores, source = await self._popular_response(
                vd, longest + 1, category if category >= 0 else None
            )
            context = np.asarray([item_id], np.int64)
        rows, report = await self._fill(
            snap,
            rs,
            n,
            items,
            scores,
            lambda: self._topups(
                snap,
                rs,
                seeds=items,
                sim_model=used if source == "similar" else None,
                context=context,
                global_popular=source != "popular",
            ),
            cached=got,
            seen=np.asarray([item_id], np.int64),
        )
        return SimilarResponse(
            item_id=item_id,
            version=vd.version,
            model=used,
            model_version=vd.models[used]["version"] if used else None,
            source=source,
            similar_items=rows,
            filtering=report,
        )

    async def popular(
        self,
        category: int | None,
        n: int,
        rules: Rules | None = None,
        user_id: int | None = None,
    ) -> PopularResponse:
        snap = await self.store.snapshot()
        vd = snap.data
        if category is not None and category not in vd.popular_categories:
            raise NotFoundException(f"category {category} has no published popular list")
        rs = await self._ruleset(snap, rules, where="", user_id=user_id, scope=category)
        items, scores, source = await self._popular_response(
            vd, self.settings.max_recommendations, category
        )
        rows, report = await self._fill(
            snap,
            rs,
            n,
            items,
            scores,
            lambda: self._topups(snap, rs, global_popular=source != "popular"),
        )
        return PopularResponse(
            version=vd.version,
            category_id=category,
            source=source,
            items=rows,
            filtering=report,
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

    async def categories(self) -> list[int]:
        """Every category the served catalogue knows (what a category rule may name)."""
        snap = await self.store.snapshot()
        return (await self.store.catalog_rules(snap.data)).categories.tolist()

    # --- live item overrides (admin) -----------------------------------------------------------
    async def item_overrides(self) -> ItemOverridesResponse:
        ov = Overrides.from_hash(await self.store.reader.item_overrides())
        return ItemOverridesResponse(ov.generation, len(ov.ids), ov.as_dict())

    async def change_item_overrides(self, req: ItemOverridesRequest) -> ItemOverridesResponse:
        """Mark items unavailable / available / hidden (or drop their override) for every model
        and version at once: each worker re-reads the overrides when their generation moves."""
        # weakest first, so an item named in several lists ends with the strongest state
        states = {i: f for f in ("available", "unavailable", "hidden") for i in getattr(req, f)}
        clear = sorted(set(req.clear) - set(states))
        await self.store.reader.change_item_overrides(states, clear, new_generation())
        self.store.invalidate()
        return await self.item_overrides()

    async def clear_item_overrides(self) -> ItemOverridesResponse:
        await self.store.reader.change_item_overrides({}, [], new_generation(), clear_all=True)
        self.store.invalidate()
        return await self.item_overrides()

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
