"""Serving tests run against a real Redis (``redis_url``, ``r`` and ``prefix`` come from the root
conftest), each under its own random key prefix, over hand-made bundles defined here."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_serving.bundle import GruWeights, ModelLists, ServingBundle

LOCAL_URL = "redis://127.0.0.1:6379/0"
ADMIN = "s3cret-token"


def hand_gru(seed: int = 0, hidden: int = 4) -> GruWeights:
    """A random one-layer GRU4Rec network (constrained embedding) over items 10..50.

    Item 60 is in the network's columns but untrained (bias -inf, as GRU4Rec marks items it
    never saw): it is neither an input nor an answer.
    """
    rng = np.random.default_rng(seed)
    n, h = 6, hidden
    arrays = {
        "input_mode": np.asarray(0, np.int64),
        "n_layers": np.asarray(1, np.int64),
        "output_weight": rng.normal(0, 0.5, (n, h)).astype(np.float32),
        "output_bias": np.r_[rng.normal(0, 0.1, n - 1), -np.inf].astype(np.float32),
        "layer0_weight_ih": rng.normal(0, 0.5, (3 * h, h)).astype(np.float32),
        "layer0_weight_hh": rng.normal(0, 0.5, (3 * h, h)).astype(np.float32),
        "layer0_bias_ih": rng.normal(0, 0.1, 3 * h).astype(np.float32),
        "layer0_bias_hh": rng.normal(0, 0.1, 3 * h).astype(np.float32),
    }
    # columns in another order than the ids: the service must map ids to columns
    return GruWeights(item_ids=np.array([30, 10, 50, 20, 40, 60]), arrays=arrays)


def hand_bundle(shift: int = 0, gru: bool = False, unavailable: tuple = ()) -> ServingBundle:
    """Six items, users 100/200/300 with lists, user 400 with history only.

    ``shift`` rotates the als lists so that a second publish is recognisably different;
    ``gru`` adds a third model, ``gru4rec``, with a published network (:func:`hand_gru`);
    ``unavailable``: items published as unavailable (none: the service leaves those out, and
    these tests are about the lists). Categories 1 and 2 sit below category 4.
    """
    f32 = np.float32
    als_items = np.array([[10, 20, 30, 40], [50, 10, -1, -1], [60, 50, 40, 30]])
    if shift:
        als_items = np.array([[60, 50, 40, 30], [20, 30, -1, -1], [10, 20, 30, 40]])
    als = ModelLists(
        name="als",
        version="7",
        trained_at="2015-09-18T00:00:00+00:00",
        metrics={"ndcg_at_10": 0.25, "recall_at_20": 0.5},
        params={"factors": 8},
        user_ids=np.array([100, 200, 300]),
        items=als_items,
        scores=np.array([[0.9, 0.8, 0.5, 0.1], [2.0, 1.0, 0, 0], [1, 1, 1, 1]], f32),
    )
    knn = ModelLists(
        name="knn",
        version="3",
        trained_at="2015-09-18T01:00:00+00:00",
        metrics={"ndcg_at_10": 0.2},
        params={"k": 50},
        user_ids=np.array([100, 200]),
        items=np.array([[40, 30, 20, 10], [20, 30, 40, 50]]),
        scores=np.array([[0.4, 0.3, 0.2, 0.1], [4, 3, 2, 1]], f32),
        similar_item_ids=np.array([10, 20, 30]),
        similar_items=np.array([[20, 30, -1], [10, 40, 50], [10, -1, -1]]),
        similar_scores=np.array([[0.9, 0.6, 0], [0.8, 0.6, 0.4], [0.7, 0, 0]], f32),
    )
    models = [als, knn]
    if gru:
        models.append(
            ModelLists(
                name="gru4rec",
                version="2",
                trained_at="2015-09-18T02:00:00+00:00",
                metrics={"ndcg_at_10": 0.3},
                params={"layers": [4]},
                user_ids=np.array([100]),
                items=np.array([[20, 30, 40]]),
                scores=np.array([[0.3, 0.2, 0.1]], f32),
                gru=hand_gru(),
            )
        )
    return ServingBundle(
        models=models,
        default_model="als",
        popular_items=np.array([50, 10, 20, 30, 40, 60]),
        popular_scores=np.array([60, 50, 40, 30, 20, 10], f32),
        popular_by_category={1: (np.array([10, 20]), np.array([5, 4], f32)),
                             2: (np.array([40, 30]), np.array([3, 2], f32)),
                             3: (np.array([50]), np.array([9], f32))},
        history_user_ids=np.array([100, 400]),
        history_indptr=np.array([0, 2, 3]),
        history_items=np.array([10, 20, 20]),
        history_events=np.array(["transaction", "view", "view"]),
        history_timestamps=np.array([1_442_000_002_000, 1_442_000_001_000, 1_442_000_005_000]),
        item_ids=np.array([10, 20, 30, 40, 50, 60]),
        item_category=np.array([1, 1, 2, 2, 3, -1]),
        item_price=np.array([9.99, 5.0, np.nan, 20.0, 1.5, 3.0]),
        item_available=np.where(np.isin([10, 20, 30, 40, 50, 60], unavailable), 0,
                                np.array([1, 1, 1, -1, 1, 1])).astype(np.int8),
        category_ids=np.array([1, 2, 3, 4]),
        category_parents=np.array([4, 4, -1, -1]),
    )  # fmt: skip


@pytest.fixture
def bundle():
    return hand_bundle()


@pytest.fixture
def make_bundle():
    """The hand-made bundle builder (``make_bundle(shift=1)`` for a different second one)."""
    return hand_bundle


@pytest.fixture
def make_gru():
    """The hand-made network builder (``make_gru(seed=1)`` for another one)."""
    return hand_gru


@pytest.fixture
def admin_token():
    return ADMIN


@pytest.fixture
def chromium(tmp_path):
    """A headless chromium tab (browser tests of the service's pages)."""
    from chromium import headless_chromium

    with headless_chromium(tmp_path / "profile") as tab:
        yield tab
