"""Build the serving bundle (every list the online service reads) from trained models.

Personal lists are precomputed for the most recently active users known to the models (capped,
so a full-scale publish fits its Redis memory budget); everyone else with a history is answered
online from their history and the published neighbour lists, and everyone new from popularity.
The lists come from the same ``recommend`` call as the offline evaluation, so the service's
top-10 for a test user equals that model's ``eval_recommendations`` top-10. A model that can
export its network to numpy (``export_numpy``, GRU4Rec) also publishes it, and the service answers
session requests with it live (:mod:`recsys_serving.gru_forward`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys_assets.core.data.catalog import item_catalog
from recsys_assets.core.progress import Progress
from recsys_serving.bundle import EVENT_CODES, GruWeights, ModelLists, ServingBundle

log = logging.getLogger(__name__)

NO_NEIGHBOUR_MODELS = frozenset({"popular"})


@dataclass(frozen=True)
class PublishedModel:
    model: object  # a fitted Recommender
    version: int
    trained_at: str
    metrics: dict[str, float]
    params: dict


@dataclass(frozen=True)
class BundleLimits:
    top_n: int = 100  # personal list length
    similar_n: int = 20  # neighbours per item
    history_len: int = 50  # most recent events per user
    # Precomputing is the slow part of a publish (scale 1.0, 2 cores: ~35 s per 100k users for
    # ALS); users beyond the cap are answered online from their history + neighbour lists.
    max_users: int = 100_000  # personal lists for at most this many most-recent users
    max_similar_items: int = 30_000  # neighbour lists for at most this many most popular items
    popular_n: int = 100
    popular_per_category_n: int = 50
    batch_size: int = 4096


def build_serving_bundle(
    models: Mapping[str, PublishedModel],
    splits: pl.DataFrame,
    catalog: pl.DataFrame,
    default_model: str,
    limits: BundleLimits = BundleLimits(),
    ab_experiment: dict | None = None,
    category_tree: pl.DataFrame | None = None,
) -> ServingBundle:
    if default_model not in models:
        raise ValueError(f"default model {default_model!r} is not among {sorted(models)}")
    popularity = _popularity(splits)
    return ServingBundle(
        models=[_model_lists(name, pm, splits, popularity, limits) for name, pm in models.items()],
        default_model=default_model,
        **_popular_lists(popularity, catalog, limits),
        **_history(splits, limits.history_len),
        **_items(catalog),
        **_tree(category_tree),
        ab_experiment=ab_experiment,
    )


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


def _model_lists(
    name: str,
    pm: PublishedModel,
    splits: pl.DataFrame,
    popularity: pl.DataFrame,
    limits: BundleLimits,
) -> ModelLists:
    start = time.perf_counter()
    model = pm.model
    known = pl.Series("user_id", np.asarray(model.user_ids, dtype=np.int64))
    recent = (
        splits.filter(pl.col("user_id").is_in(known.implode()))
        .group_by("user_id")
        .agg(pl.col("timestamp").max().alias("last"))
        .sort(["last", "user_id"], descending=[True, False])
        .head(limits.max_users)
    )
    users = recent["user_id"].sort().to_numpy()
    log.info(
        "bundle %s: personal top-%d lists for %s of %s known users",
        name,
        limits.top_n,
        f"{len(users):,}",
        f"{len(known):,}",
    )
    items, scores = _batched(
        model.recommend,
        users,
        limits.top_n,
        limits.batch_size,
        f"bundle {name}: lists for",
        "users",
    )

    model_items = np.asarray(model.item_ids, dtype=np.int64)
    ranked = popularity.filter(pl.col("item_id").is_in(pl.Series(model_items).implode()))
    # Popularity has no notion of item neighbours: its "similar items" would be the same global
    # list for every item, so none are published and the service uses another model's.
    n_similar = 0 if name in NO_NEIGHBOUR_MODELS else limits.max_similar_items
    sim_ids = np.sort(ranked["item_id"].head(n_similar).to_numpy())
    sim_items, sim_scores = _batched(
        model.similar_items,
        sim_ids,
        limits.similar_n,
        limits.batch_size,
        f"bundle {name}: neighbours of",
        "items",
    )
    log.info(
        "bundle %s: %s user lists and %s neighbour lists in %.1f s",
        name,
        f"{len(users):,}",
        f"{len(sim_ids):,}",
        time.perf_counter() - start,
    )
    return ModelLists(
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


def _batched(
    fn, ids: np.ndarray, n: int, batch_size: int, label: str = "computed", unit: str = "ids"
) -> tuple[np.ndarray, np.ndarray]:
    """(len(ids), n) item/score arrays from a model call in batches; -1 / -inf pad short rows
    (a catalogue smaller than ``n`` makes the model answer narrower). Logs progress: at scale 1.0
    this is the slow part of a publish."""
    items = np.full((len(ids), n), -1, dtype=np.int64)
    scores = np.full((len(ids), n), -np.inf, dtype=np.float32)
    progress = Progress(log, label, len(ids), unit)
    for start in range(0, len(ids), batch_size):
        recs = fn(ids[start : start + batch_size], k=n)
        width = recs.item_ids.shape[1]
        items[start : start + len(recs), :width] = recs.item_ids
        scores[start : start + len(recs), :width] = recs.scores
        progress.update(start + len(recs))
    return items, scores


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
    codes = {name: i for i, name in enumerate(EVENT_CODES)}
    recent = (
        splits.select("user_id", "item_id", "event", "timestamp")
        .sort(["user_id", "timestamp"], descending=[False, True])
        .group_by("user_id", maintain_order=True)
        .head(history_len)
    )
    users, counts = np.unique(recent["user_id"].to_numpy(), return_counts=True)
    indptr = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return {
        "history_user_ids": users.astype(np.int64),
        "history_indptr": indptr,
        "history_items": recent["item_id"].to_numpy().astype(np.int64),
        "history_events": recent["event"].replace_strict(codes, return_dtype=pl.Int8).to_numpy(),
        "history_timestamps": recent["timestamp"].to_numpy().astype(np.int64),
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
