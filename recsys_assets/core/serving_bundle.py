"""Build the serving bundle (every list the online service reads) from trained models.

Personal lists are precomputed for the most recently active users known to the models, capped
twice: in number (a full-scale publish fits its Redis memory budget) and in time per model (a
slow model stops at its budget, keeping the most recent users; neighbour lists likewise keep the
most popular items). Everyone else with a history is answered online from their history and the
published neighbour lists, and everyone new from popularity.
The lists come from the same ``recommend`` call as the offline evaluation, so the service's
top-10 for a test user equals that model's ``eval_recommendations`` top-10. A model that can
export its network to numpy (``export_numpy``, GRU4Rec) also publishes it, and the service answers
session requests with it live (:mod:`recsys_serving.gru_forward`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

from recsys_assets.core.data.catalog import item_catalog
from recsys_assets.core.progress import Progress
from recsys_serving.bundle import EVENT_CODES, GruWeights, ModelLists, ServingBundle

log = logging.getLogger(__name__)

Lists = tuple[np.ndarray, np.ndarray, np.ndarray]  # sorted user ids, (n, K) items, (n, K) scores

NO_NEIGHBOUR_MODELS = frozenset({"popular"})
FIRST_BATCH = 256  # ids in a capped loop's first batch, which measures the model's throughput


@dataclass(frozen=True)
class PublishedModel:
    model: object  # a fitted Recommender
    version: int
    trained_at: str
    metrics: dict[str, float]
    params: dict
    # For a model built on others (the Hybrid): the version of each source it uses. When the
    # bundle holds that very version's lists, the model takes its candidates from them.
    sources: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BundleLimits:
    top_n: int = 100  # personal list length
    similar_n: int = 20  # neighbours per item
    history_len: int = 50  # most recent events per user
    # Memory caps: a full-scale publish must fit its Redis memory budget.
    max_users: int = 100_000  # personal lists for at most this many most-recent users
    max_similar_items: int = 30_000  # neighbour lists for at most this many most popular items
    # Time caps (wall-clock seconds per model; None: no cap). Precomputing is the slow part of a
    # publish and its cost differs 100x between models (benchmarks/bench_bundle.py, scale 1.0:
    # ItemKNN 0.12 ms a user, ALS ~1 ms, NCF ~3-8 ms, the Hybrid ~17 ms under a load of 3.5;
    # neighbours of 30k items: ItemKNN 0.3 s, ALS 61 s, NCF 144 s, GRU4Rec 228 s). The users a
    # model's evaluation scored (every test user: the most recently active) come from its
    # stored lists at no cost (``build_bundle``'s ``stored_lists``); the caps bound only the
    # others, scored most recent first, so a slow model keeps the most active of them. Chosen
    # so that nothing is cut for the cheap models at the default scale (0.05).
    max_seconds_per_model: float | None = 10.0
    max_similar_seconds_per_model: float | None = 8.0
    # The default model answers every request that names none: it gets a larger budget.
    max_seconds_default_model: float | None = 40.0
    popular_n: int = 100
    popular_per_category_n: int = 50
    batch_size: int = 4096


@dataclass(frozen=True)
class ModelCost:
    """What one model's lists cost in a bundle, and how much of them the time caps cut."""

    model: str
    known_users: int  # users the model was trained on
    users: int  # users given a precomputed personal list
    users_stored: int  # of those, taken from the model's evaluation lists (not scored again)
    users_cut: int  # within ``max_users`` but left out by ``max_seconds_per_model``
    list_seconds: float
    similar_items: int  # items given a neighbour list
    similar_cut: int  # within ``max_similar_items`` but left out by the neighbour time cap
    similar_seconds: float
    seconds: float  # everything for this model, selection and network export included
    cpu_seconds: float  # CPU time of the process meanwhile (wall time swells on a loaded machine)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BundleBuild:
    """A built bundle with its cost: one :class:`ModelCost` per model and the shared parts'."""

    bundle: ServingBundle
    costs: list[ModelCost]
    shared_seconds: dict[str, float]  # popularity, history, items: what every model shares


def build_bundle(
    models: Mapping[str, PublishedModel],
    splits: pl.DataFrame,
    catalog: pl.DataFrame,
    default_model: str,
    limits: BundleLimits = BundleLimits(),
    ab_experiment: dict | None = None,
    category_tree: pl.DataFrame | None = None,
    stored_lists: Callable[[str], Lists | None] | None = None,
) -> BundleBuild:
    """Every list of the bundle. ``stored_lists(name)``, when given, returns lists the model
    already made with its own ``recommend`` (its ``eval_recommendations``: every test user's
    top-``limits.top_n``) or None: those users are taken as they are, and only the other
    wanted users are scored here, within the time caps."""
    if default_model not in models:
        raise ValueError(f"default model {default_model!r} is not among {sorted(models)}")
    shared: dict[str, float] = {}
    clock = time.perf_counter()
    popularity = _popularity(splits)
    recency = _recency(splits)
    shared["popularity_and_recency"] = time.perf_counter() - clock
    built: dict[str, tuple[ModelLists, ModelCost]] = {}
    # models built on others last, so that they can take their candidates from the lists built
    for name, pm in sorted(models.items(), key=lambda kv: bool(kv[1].sources)):
        budget = (
            limits.max_seconds_default_model
            if name == default_model
            else limits.max_seconds_per_model
        )
        presets = _source_presets(pm, models, {n: b[0] for n, b in built.items()})
        stored = stored_lists(name) if stored_lists is not None else None
        with pm.model.source_lists(presets) if presets else nullcontext():
            built[name] = _model_lists(name, pm, recency, popularity, limits, budget, stored)
    built = {name: built[name] for name in models}  # the caller's order
    clock = time.perf_counter()
    popular = _popular_lists(popularity, catalog, limits)
    shared["popular_lists"] = time.perf_counter() - clock
    clock = time.perf_counter()
    history = _history(splits, limits.history_len)
    shared["history"] = time.perf_counter() - clock
    clock = time.perf_counter()
    items = {**_items(catalog), **_tree(category_tree)}
    shared["items"] = time.perf_counter() - clock
    bundle = ServingBundle(
        models=[lists for lists, _ in built.values()],
        default_model=default_model,
        **popular,
        **history,
        **items,
        ab_experiment=ab_experiment,
    )
    return BundleBuild(bundle, [cost for _, cost in built.values()], shared)


def _source_presets(
    pm: PublishedModel, models: Mapping[str, PublishedModel], built: Mapping[str, ModelLists]
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The built lists of ``pm``'s sources that come from the very versions it uses."""
    if not pm.sources or not hasattr(pm.model, "source_lists"):
        return {}
    presets = {}
    for name, version in pm.sources.items():
        lists = built.get(name)
        if lists is not None and models[name].version == version:
            presets[name] = (lists.user_ids, lists.items, lists.scores)
    if presets:
        log.info("bundle: candidates of %s from %s", pm.model.name, ", ".join(sorted(presets)))
    return presets


def _tree(tree: pl.DataFrame | None) -> dict:
    """The category parent map (``category_tree``: category_id, parent_id), for the service's
    category rules (an item matches a category when it sits anywhere below it)."""
    if tree is None:
        return {}
    return {
        "category_ids": tree["category_id"].to_numpy().astype(np.int64),
        "category_parents": tree["parent_id"].fill_null(-1).to_numpy().astype(np.int64),
    }


def _popularity(splits: pl.DataFrame) -> pl.DataFrame:
    """Weighted interaction mass per item over the whole period, most popular first."""
    return (
        splits.group_by("item_id")
        .agg(pl.col("weight").sum().cast(pl.Float32).alias("score"))
        .sort(["score", "item_id"], descending=[True, False])
    )


def _recency(splits: pl.DataFrame) -> np.ndarray:
    """Every user id, most recently active first (ties by id): the order users are precomputed
    in, so a time cap keeps the most active ones. Computed once for every model."""
    return (
        splits.group_by("user_id")
        .agg(pl.col("timestamp").max().alias("last"))
        .sort(["last", "user_id"], descending=[True, False])["user_id"]
        .to_numpy()
        .astype(np.int64)
    )


def _model_lists(
    name: str,
    pm: PublishedModel,
    recency: np.ndarray,
    popularity: pl.DataFrame,
    limits: BundleLimits,
    budget: float | None,
    stored: Lists | None = None,
) -> tuple[ModelLists, ModelCost]:
    start, cpu = time.perf_counter(), time.process_time()
    model = pm.model
    known = np.asarray(model.user_ids, dtype=np.int64)
    wanted = recency[np.isin(recency, known)][: limits.max_users]
    taken = _stored_part(stored, wanted, limits.top_n)
    to_score = wanted[~np.isin(wanted, taken[0])]
    log.info(
        "bundle %s: personal top-%d lists for %s of %s known users%s",
        name,
        limits.top_n,
        f"{len(wanted):,}",
        f"{len(known):,}",
        "" if stored is None else f" ({len(taken[0]):,} from its evaluation)",
    )
    clock = time.perf_counter()
    scored = _capped(
        model.recommend,
        to_score,
        limits.top_n,
        limits.batch_size,
        budget,
        f"bundle {name}: lists for",
        "users",
    )
    users, items, scores = _merged(taken, scored)
    list_seconds = time.perf_counter() - clock
    if len(users) < len(wanted):
        log.info(
            "bundle %s: time cap %.0f s reached, %s most recent users precomputed, %s left to "
            "online answers from their history",
            name,
            budget,
            f"{len(users):,}",
            f"{len(wanted) - len(users):,}",
        )

    # Popularity has no notion of item neighbours: its "similar items" would be the same global
    # list for every item, so none are published and the service uses another model's.
    n_similar = 0 if name in NO_NEIGHBOUR_MODELS else limits.max_similar_items
    model_items = np.asarray(model.item_ids, dtype=np.int64)
    ranked = popularity["item_id"].to_numpy()
    wanted_items = ranked[np.isin(ranked, model_items)][:n_similar]
    clock = time.perf_counter()
    sim_ids, sim_items, sim_scores = _capped(
        model.similar_items,
        wanted_items,
        limits.similar_n,
        limits.batch_size,
        limits.max_similar_seconds_per_model,
        f"bundle {name}: neighbours of",
        "items",
    )
    similar_seconds = time.perf_counter() - clock
    if len(sim_ids) < len(wanted_items):
        log.info(
            "bundle %s: neighbour time cap %.0f s reached, lists for the %s most popular items",
            name,
            limits.max_similar_seconds_per_model,
            f"{len(sim_ids):,}",
        )
    lists = ModelLists(
        name=name,
        version=str(pm.version),
        trained_at=pm.trained_at,
        metrics=pm.metrics,
        params=pm.params,
        user_ids=users,
        items=items,
        scores=scores,
        similar_item_ids=sim_ids,
        similar_items=sim_items,
        similar_scores=sim_scores,
        gru=_network(name, model),
    )
    cost = ModelCost(
        model=name,
        known_users=len(known),
        users=len(users),
        users_stored=len(taken[0]),
        users_cut=len(wanted) - len(users),
        list_seconds=round(list_seconds, 2),
        similar_items=len(sim_ids),
        similar_cut=len(wanted_items) - len(sim_ids),
        similar_seconds=round(similar_seconds, 2),
        seconds=round(time.perf_counter() - start, 2),
        cpu_seconds=round(time.process_time() - cpu, 2),
    )
    log.info(
        "bundle %s: %s user lists and %s neighbour lists in %.1f s",
        name,
        f"{cost.users:,}",
        f"{cost.similar_items:,}",
        cost.seconds,
    )
    return lists, cost


def _stored_part(stored: Lists | None, wanted: np.ndarray, n: int) -> Lists:
    """The rows of ``stored`` for wanted users, ``n`` ranks wide (nothing when it is narrower:
    a list cut at fewer ranks cannot stand for the model's top-``n``)."""
    if stored is None or stored[1].shape[1] < n:
        return np.zeros(0, np.int64), np.zeros((0, n), np.int64), np.zeros((0, n), np.float32)
    users, items, scores = stored
    keep = np.isin(users, wanted)
    return (
        users[keep].astype(np.int64),
        items[keep, :n].astype(np.int64),
        scores[keep, :n].astype(np.float32),
    )


def _merged(a: Lists, b: Lists) -> Lists:
    """Two sets of lists over distinct users as one, sorted by user id (the publisher's order)."""
    users = np.concatenate([a[0], b[0]])
    order = np.argsort(users, kind="stable")
    return users[order], np.concatenate([a[1], b[1]])[order], np.concatenate([a[2], b[2]])[order]


def _network(name: str, model) -> GruWeights | None:
    """The model's network for live session answers, when it can export one (GRU4Rec)."""
    export = getattr(model, "export_numpy", None)
    if export is None:
        return None
    arrays = export()
    log.info(
        "bundle %s: network for live sessions, %.1f MB",
        name,
        sum(a.nbytes for a in arrays.values()) / 1e6,
    )
    return GruWeights(item_ids=np.asarray(model.item_ids, dtype=np.int64), arrays=arrays)


def _capped(
    fn,
    ids: np.ndarray,
    n: int,
    batch_size: int,
    budget: float | None,
    label: str,
    unit: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids done sorted, (done, n) items, scores) from a model call over a prefix of ``ids``.

    ``ids`` come in priority order; batches run until ``budget`` seconds would be exceeded,
    judged by the throughput measured so far. Batches start small and double up to
    ``batch_size``, so that a slow model (the Hybrid at scale 1.0: ~17 ms a user) has its
    throughput measured before it spends its budget on one big batch; the first batch always
    runs, so a model is never left without lists, and a last batch shrinks to what still fits.
    -1 / -inf pad short rows (a catalogue smaller than ``n`` makes the model answer narrower).
    The result is sorted by id, as the publisher wants.
    """
    # batches are kept, not written into (len(ids), n) arrays: a capped model may fill only a
    # few percent of those (100k users x 100 items is 120 MB a model)
    items, scores = [np.zeros((0, n), np.int64)], [np.zeros((0, n), np.float32)]
    progress = Progress(log, label, len(ids), unit)
    start = time.perf_counter()
    done = 0
    while done < len(ids):
        size = min(batch_size, max(FIRST_BATCH, done), len(ids) - done)
        if budget is not None and done:
            elapsed = time.perf_counter() - start
            fits = int((budget - elapsed) * done / max(elapsed, 1e-9))
            # a sliver of a batch costs its fixed overhead for few users: stop instead
            if fits < max(1, size // 8):
                break
            size = min(size, fits)
        recs = fn(ids[done : done + size], k=n)
        items.append(_widen(recs.item_ids, n, -1, np.int64))
        scores.append(_widen(recs.scores, n, -np.inf, np.float32))
        done += size
        progress.update(done)
    order = np.argsort(ids[:done], kind="stable")
    return ids[:done][order], np.concatenate(items)[order], np.concatenate(scores)[order]


def _widen(a: np.ndarray, n: int, fill, dtype) -> np.ndarray:
    """``a`` as ``dtype`` padded with ``fill`` to ``n`` columns."""
    out = np.full((a.shape[0], n), fill, dtype=dtype)
    out[:, : a.shape[1]] = a
    return out


def _popular_lists(popularity: pl.DataFrame, catalog: pl.DataFrame, limits: BundleLimits) -> dict:
    by_cat = (
        popularity.join(catalog.select("item_id", "category_id"), on="item_id", how="inner")
        .drop_nulls("category_id")
        .sort(["category_id", "score", "item_id"], descending=[False, True, False])
        .group_by("category_id", maintain_order=True)
        .head(limits.popular_per_category_n)
        .group_by("category_id", maintain_order=True)
        .agg("item_id", "score")
    )
    per_category = {
        int(c): (np.asarray(i, dtype=np.int64), np.asarray(s, dtype=np.float32))
        for c, i, s in by_cat.iter_rows()
    }
    top = popularity.head(limits.popular_n)
    return {
        "popular_items": top["item_id"].to_numpy().astype(np.int64),
        "popular_scores": top["score"].to_numpy().astype(np.float32),
        "popular_by_category": per_category,
    }


def _history(splits: pl.DataFrame, history_len: int) -> dict:
    """Every user's ``history_len`` newest events, newest first, as CSR arrays.

    One sort, then the position of each event within its user's run by numpy arithmetic (a
    ``group_by().head()`` and a second sort for the counts took 2x as long on 2.7M events).
    """
    codes = {name: i for i, name in enumerate(EVENT_CODES)}
    ordered = splits.select(
        "user_id",
        "item_id",
        pl.col("event").replace_strict(codes, return_dtype=pl.Int8),
        "timestamp",
    ).sort(["user_id", "timestamp"], descending=[False, True])
    user = ordered["user_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]]) if len(user) else np.zeros(0, int)
    lengths = np.diff(np.r_[starts, len(user)])
    position = np.arange(len(user)) - np.repeat(starts, lengths)
    keep = position < history_len
    indptr = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(np.minimum(lengths, history_len), out=indptr[1:])
    return {
        "history_user_ids": user[starts].astype(np.int64),
        "history_indptr": indptr,
        "history_items": ordered["item_id"].to_numpy()[keep].astype(np.int64),
        "history_events": ordered["event"].to_numpy()[keep],
        "history_timestamps": ordered["timestamp"].to_numpy()[keep].astype(np.int64),
    }


def latest_catalog(
    history: pl.DataFrame, tree_table: pl.DataFrame, item_ids: pl.Series
) -> pl.DataFrame:
    """Each item's category, price and availability from the newest property snapshot.

    Offline evaluation uses ``item_catalog`` (values in force when the test period starts, so
    nothing is peeked); the service must instead show what the shop can sell now, so the bundle
    carries the latest values of the file (and the service's admin overrides apply on top).
    """
    newest = history["timestamp"].max()
    as_of = int(newest) if newest is not None else 0
    return item_catalog(history, tree_table, as_of, item_ids)


def _items(catalog: pl.DataFrame) -> dict:
    cat = catalog.sort("item_id")
    return {
        "item_ids": cat["item_id"].to_numpy().astype(np.int64),
        "item_category": cat["category_id"].fill_null(-1).to_numpy().astype(np.int64),
        "item_price": cat["price"].cast(pl.Float64).to_numpy(),
        "item_available": cat["available"].fill_null(-1).to_numpy().astype(np.int8),
    }
