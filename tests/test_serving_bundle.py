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
from recsys_assets.core.serving_bundle import BundleLimits, PublishedModel, build_bundle

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


def _build(frames, model, limits):
    splits, catalog, _ = frames
    return build_bundle(
        {"knn": PublishedModel(model, 1, "t", {}, {})}, splits, catalog, "knn", limits
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
