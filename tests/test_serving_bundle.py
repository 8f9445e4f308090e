"""The serving bundle's time caps: a slow model keeps its most recent users and most popular
items, reports what was cut, and the lists it does publish are the model's own."""

from __future__ import annotations

import time

import numpy as np
import polars as pl
import pytest
from generated_frames import load_generated

from recsys_assets.core.data.training_data import build_training_data
from recsys_assets.core.models.registry import create_model
from recsys_assets.core.serving_bundle import (
    BundleBuild,
    BundleLimits,
    PublishedModel,
    build_bundle,
)

SECONDS_PER_ID = 0.001  # the slow model's cost: sleeping dominates item_knn's own at this scale
BUDGET = 0.8


class Slow:
    """A fitted model whose ``recommend`` / ``similar_items`` cost ``SECONDS_PER_ID`` an id."""

    def __init__(self, model):
        self.model = model
        self.user_ids, self.item_ids = model.user_ids, model.item_ids
        self.calls: list[int] = []

    def recommend(self, ids, k):
        self.calls.append(len(ids))
        time.sleep(SECONDS_PER_ID * len(ids))
        return self.model.recommend(ids, k=k)

    def similar_items(self, ids, k):
        time.sleep(SECONDS_PER_ID * len(ids))
        return self.model.similar_items(ids, k=k)


@pytest.fixture(scope="module")
def frames(small_raw_dir):
    return load_generated(small_raw_dir)


@pytest.fixture(scope="module")
def knn(frames):
    splits, catalog, tree = frames
    data = build_training_data(splits, catalog, tree, use_splits=("train", "valid"))
    return create_model("item_knn").fit(data)


def _recency(splits: pl.DataFrame, known: np.ndarray) -> pl.DataFrame:
    """Known users, most recently active first (ties by id)."""
    return (
        splits.filter(pl.col("user_id").is_in(pl.Series(known).implode()))
        .group_by("user_id")
        .agg(pl.col("timestamp").max().alias("last"))
        .sort(["last", "user_id"], descending=[True, False])
    )


def _build(frames, model, limits, default="pop"):
    """``model`` published as "knn" beside a Popularity model, the default unless named."""
    splits, catalog, tree = frames
    pop = create_model("popular").fit(
        build_training_data(splits, catalog, tree, use_splits=("train", "valid"))
    )
    models = {
        "knn": PublishedModel(model, 1, "t", {}, {}),
        "pop": PublishedModel(pop, 1, "t", {}, {}),
    }
    built = build_bundle(models, splits, catalog, default, limits)
    return BundleBuild(
        built.bundle, [c for c in built.costs if c.model == "knn"], built.shared_seconds
    )


def test_uncapped_bundle_precomputes_every_known_user(frames, knn):
    limits = BundleLimits(top_n=10, max_seconds_per_model=None, max_similar_seconds_per_model=None)
    built = _build(frames, knn, limits)
    (cost,) = built.costs
    lists = built.bundle.model("knn")
    assert cost.users == len(lists.user_ids) == len(knn.user_ids) and cost.users_cut == 0
    assert cost.similar_cut == 0 and cost.similar_items == len(lists.similar_item_ids) > 0
    assert np.array_equal(lists.user_ids, np.sort(knn.user_ids))


def test_time_cap_keeps_the_most_recent_users_and_their_own_lists(frames, knn):
    splits = frames[0]
    slow = Slow(knn)
    limits = BundleLimits(
        top_n=10, max_seconds_per_model=BUDGET, max_similar_seconds_per_model=None
    )
    assert len(knn.user_ids) * SECONDS_PER_ID > 3 * BUDGET  # the cap must bite
    built = _build(frames, slow, limits)
    (cost,) = built.costs
    lists = built.bundle.model("knn")

    assert 0 < cost.users == len(lists.user_ids) < len(knn.user_ids)
    assert cost.users + cost.users_cut == len(knn.user_ids)
    # stopped near the budget: the throughput measured on small first batches, no big overshoot
    assert slow.calls[0] < limits.batch_size
    assert cost.users >= 0.5 * BUDGET / SECONDS_PER_ID
    assert cost.list_seconds < 2 * BUDGET
    # the users kept are the most recent ones, sorted by id as the publisher wants
    recent = _recency(splits, knn.user_ids)["user_id"].to_numpy()
    assert np.array_equal(lists.user_ids, np.sort(recent[: cost.users]))
    # ... and their lists are the model's own
    want = knn.recommend(lists.user_ids, k=10)
    assert np.array_equal(lists.items, want.item_ids)
    assert np.allclose(lists.scores, want.scores)


def test_neighbour_time_cap_keeps_the_most_popular_items(frames, knn):
    splits = frames[0]
    limits = BundleLimits(
        top_n=10, similar_n=5, max_seconds_per_model=None, max_similar_seconds_per_model=0.4
    )
    built = _build(frames, Slow(knn), limits)
    (cost,) = built.costs
    lists = built.bundle.model("knn")
    assert cost.users_cut == 0
    assert 0 < cost.similar_items == len(lists.similar_item_ids)
    assert cost.similar_cut > 0
    popular = (
        splits.group_by("item_id")
        .agg(pl.col("weight").sum().cast(pl.Float32))
        .sort(["weight", "item_id"], descending=[True, False])["item_id"]
        .to_numpy()
    )
    popular = popular[np.isin(popular, knn.item_ids)]
    assert np.array_equal(lists.similar_item_ids, np.sort(popular[: cost.similar_items]))
    want = knn.similar_items(lists.similar_item_ids, k=5)
    assert np.array_equal(lists.similar_items, want.item_ids)


def test_the_default_model_has_its_own_budget(frames, knn):
    """The model that answers requests naming none gets ``max_seconds_default_model``."""
    limits = BundleLimits(
        top_n=10,
        max_seconds_per_model=BUDGET,
        max_similar_seconds_per_model=None,
        max_seconds_default_model=None,
    )
    as_default = _build(frames, Slow(knn), limits, default="knn").costs[0]
    assert as_default.users_cut == 0 and as_default.users == len(knn.user_ids)
    assert _build(frames, Slow(knn), limits).costs[0].users_cut > 0


def test_a_hybrid_takes_its_candidates_from_its_sources_published_lists(frames, knn, caplog):
    """The Hybrid's bundle lists use its sources' lists of the same versions and equal its own
    ``recommend``; a source of another version is asked directly."""
    import logging

    from recsys_assets.core.models.hybrid import HybridRecommender

    splits, catalog, tree = frames
    data = build_training_data(splits, catalog, tree, use_splits=("train", "valid"))
    hybrid = HybridRecommender(sources=["popular", "item_knn"]).fit_with_sources(
        data, {"item_knn": knn}
    )
    models = {
        "hybrid": PublishedModel(hybrid, 5, "t", {}, {}, sources={"item_knn": 3, "popular": 2}),
        "item_knn": PublishedModel(knn, 3, "t", {}, {}),
        # another version than the one inside the Hybrid: not used as its candidates
        "popular": PublishedModel(create_model("popular").fit(data), 4, "t", {}, {}),
    }
    limits = BundleLimits(top_n=40, max_seconds_per_model=None, max_similar_seconds_per_model=None)
    with caplog.at_level(logging.INFO, logger="recsys_assets.core.serving_bundle"):
        built = build_bundle(models, splits, catalog, "hybrid", limits)
    assert "bundle: candidates of hybrid from item_knn" in caplog.text
    assert [m.name for m in built.bundle.models] == ["hybrid", "item_knn", "popular"]
    lists = built.bundle.model("hybrid")
    assert len(lists.user_ids) == len(hybrid.user_ids)
    want = hybrid.recommend(lists.user_ids, k=40)
    assert np.array_equal(lists.items, want.item_ids)
    assert np.allclose(lists.scores, want.scores)


def test_users_with_stored_lists_are_taken_and_only_the_others_scored(frames, knn):
    """The test users' lists come from the model's evaluation (``stored_lists``) as they are;
    only the other wanted users are scored, within the cap, and the merged lists are sorted."""
    splits, catalog, _ = frames
    slow = Slow(knn)
    users = np.sort(knn.user_ids)
    stored_users = users[::2]  # every other user "was evaluated"
    recs = knn.recommend(stored_users, k=10)
    # marked so that a row taken from here is told apart from one scored again
    stored = (stored_users, recs.item_ids, recs.scores + 1000.0)
    pop = create_model("popular").fit(
        build_training_data(splits, catalog, frames[2], use_splits=("train", "valid"))
    )
    models = {
        "knn": PublishedModel(slow, 1, "t", {}, {}),
        "pop": PublishedModel(pop, 1, "t", {}, {}),
    }
    limits = BundleLimits(top_n=10, max_seconds_per_model=None, max_similar_seconds_per_model=None)
    asked = []

    def stored_lists(name):
        asked.append(name)
        return stored if name == "knn" else None

    built = build_bundle(models, splits, catalog, "pop", limits, stored_lists=stored_lists)
    cost = next(c for c in built.costs if c.model == "knn")
    lists = built.bundle.model("knn")
    assert sorted(asked) == ["knn", "pop"]
    assert cost.users_stored == len(stored_users) and cost.users == len(users)
    assert sum(slow.calls) == len(users) - len(stored_users)  # the others only
    assert np.array_equal(lists.user_ids, users)
    taken = np.isin(lists.user_ids, stored_users)
    assert np.all(lists.scores[taken] >= 999.0) and np.all(lists.scores[~taken] < 999.0)
    assert np.array_equal(lists.items[taken], recs.item_ids)
    want = knn.recommend(lists.user_ids[~taken], k=10)
    assert np.array_equal(lists.items[~taken], want.item_ids)

    # lists cut at fewer ranks than the bundle's cannot stand for its top-N: all scored anew
    narrow = (stored_users, recs.item_ids[:, :5], recs.scores[:, :5])
    slow.calls.clear()
    built = build_bundle(models, splits, catalog, "pop", limits, stored_lists=lambda name: narrow)
    cost = next(c for c in built.costs if c.model == "knn")
    assert cost.users_stored == 0 and sum(slow.calls) == len(users)
