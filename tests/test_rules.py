"""Baskets and association rules: hand-computed metrics, both algorithms, pruning at scale."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import polars as pl
import pytest

from recsys_assets.core.analytics.rules import (
    BASKETS_SCHEMA,
    RULES_SCHEMA,
    association_rules,
    prune_baskets,
    session_baskets,
    transaction_baskets,
)
from recsys_assets.core.schemas import INTERACTIONS_SCHEMA

# Ten baskets that survive pruning, plus two that do not.
#   item counts: 1 -> 6, 2 -> 6, 3 -> 5, 4 -> 5 (of 10)
#   pairs: {1,2} in baskets 0,1,2,8 -> 4; every other pair in exactly 2 baskets
#   triples: {1,2,3} in basket 2, {1,2,4} in basket 8
HAND_BASKETS = [
    [1, 2], [1, 2], [1, 2, 3], [1, 3], [1, 4], [2, 3], [2, 4], [3, 4], [1, 2, 4], [3, 4],
    [5],  # a single item makes no rule: dropped
    [1, 6],  # item 6 occurs once (< min_item_count=2), so this basket keeps one item: dropped
]  # fmt: skip


def _baskets(lists: list[list[int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "basket_id": [b for b, items in enumerate(lists) for _ in items],
            "item_id": [i for items in lists for i in items],
        },
        schema=BASKETS_SCHEMA,
    )


@pytest.mark.parametrize("algorithm", ["fpgrowth", "apriori"])
def test_hand_computed_rule(algorithm):
    rules = association_rules(
        _baskets(HAND_BASKETS),
        algorithm=algorithm,
        min_support=0.3,
        min_confidence=0.5,
        min_item_count=2,
    )
    assert rules.schema == pl.Schema(RULES_SCHEMA)
    # only {1,2} reaches support 0.3 (4 of the 10 kept baskets, not of the 12 given)
    assert rules["antecedents"].to_list() == [[1], [2]]
    assert rules["consequents"].to_list() == [[2], [1]]
    rule = rules.row(0, named=True)
    assert rule["n_baskets"] == 10 and rule["algorithm"] == algorithm
    assert rule["antecedent_support"] == pytest.approx(0.6)
    assert rule["consequent_support"] == pytest.approx(0.6)
    assert rule["support"] == pytest.approx(0.4)
    assert rule["confidence"] == pytest.approx(4 / 6)
    assert rule["lift"] == pytest.approx((4 / 6) / 0.6)  # 1.111
    assert rule["leverage"] == pytest.approx(0.4 - 0.6 * 0.6)
    assert rule["conviction"] == pytest.approx((1 - 0.6) / (1 - 4 / 6))  # 1.2


def test_thresholds_and_max_len():
    baskets = _baskets(HAND_BASKETS)
    loose = dict(min_support=0.1, min_confidence=0.0, min_lift=0.0, min_item_count=2)
    # 6 pairs -> 12 rules; 2 triples -> 6 rules each
    assert association_rules(baskets, **loose).height == 24
    pairs_only = association_rules(baskets, **loose, max_len=2)
    assert pairs_only.height == 12
    assert pairs_only["antecedents"].list.len().max() == 1
    # lift >= 1: {1,2} (1.11) and e.g. 3 -> 4 (0.2 / (0.5 * 0.5) = 0.8) is dropped
    lifted = association_rules(baskets, **{**loose, "min_lift": 1.0}, max_len=2)
    assert (lifted["lift"] >= 1.0).all()
    assert [[1], [2]] == sorted(lifted.filter(pl.col("support") > 0.3)["antecedents"].to_list())
    three_four = pairs_only.filter(pl.col("antecedents") == [3], pl.col("consequents") == [4])
    assert three_four["lift"].item() == pytest.approx(0.8)
    assert lifted.filter(pl.col("antecedents") == [3], pl.col("consequents") == [4]).height == 0


def test_apriori_and_fpgrowth_agree():
    rng = np.random.default_rng(7)
    sizes = rng.integers(2, 6, size=400)
    items = rng.zipf(1.6, size=sizes.sum()) % 40
    baskets = pl.DataFrame(
        {"basket_id": np.repeat(np.arange(400), sizes), "item_id": items}, schema=BASKETS_SCHEMA
    )
    settings = dict(min_support=0.02, min_confidence=0.05, min_lift=0.0, min_item_count=3)
    fp = association_rules(baskets, algorithm="fpgrowth", **settings).drop("algorithm")
    ap = association_rules(baskets, algorithm="apriori", **settings).drop("algorithm")
    assert fp.height > 20
    key = ["antecedents", "consequents"]
    assert fp.sort(key).equals(ap.sort(key))


def test_pruning_keeps_the_problem_small():
    """20k baskets over 50k distinct items: one planted bundle, a long tail pruned away."""
    rng = np.random.default_rng(0)
    n = 20_000
    tail = rng.permutation(50_000) + 1_000  # 50k distinct items, each in one basket at most
    planted = np.where(rng.random(n) < 0.1, 1, -1)  # item 1 (+ item 2) in ~10% of baskets
    frame = pl.DataFrame(
        {
            "basket_id": np.concatenate([np.arange(n), np.arange(n), np.arange(n) % n]),
            "item_id": np.concatenate([planted, np.where(planted > 0, 2, -1), tail[:n]]),
        }
    ).filter(pl.col("item_id") > 0)
    frame = pl.concat(
        [frame, pl.DataFrame({"basket_id": np.arange(30_000) % n, "item_id": tail[n:]})]
    ).cast(BASKETS_SCHEMA)
    assert frame["item_id"].n_unique() >= 50_000

    matrix, item_ids = prune_baskets(frame, min_item_count=5, max_items=2000, min_support=0.001)
    assert sorted(item_ids.tolist()) == [1, 2]
    assert matrix.shape[1] == 2 and matrix.nnz == 2 * matrix.shape[0]

    # numpy/pandas/scipy report their buffers to tracemalloc: a dense one-hot of the 50k
    # columns would peak near 1 GB here
    tracemalloc.start()
    start = time.perf_counter()
    rules = association_rules(frame, min_support=0.01, min_confidence=0.5)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50 * 2**20
    assert rules["antecedents"].to_list() == [[1], [2]]
    assert rules["confidence"].to_list() == [1.0, 1.0]
    assert rules["support"].to_list() == [1.0, 1.0]  # only bundle baskets keep 2 items
    assert elapsed < 5.0


def test_max_items_caps_columns():
    matrix, item_ids = prune_baskets(
        _baskets(HAND_BASKETS), min_item_count=1, max_items=3, min_support=0.001
    )
    # most frequent first, ties to the smaller id: 1 (7 baskets), 2 (6), 3 (5); 4 loses to 3
    assert item_ids.tolist() == [1, 2, 3]
    assert matrix.shape == (6, 3)  # baskets 0, 1, 2, 3, 5, 8 hold >= 2 of {1, 2, 3}


def test_empty_results_keep_schema():
    singles = _baskets([[1], [2], [3]])
    assert association_rules(singles, min_item_count=1).schema == pl.Schema(RULES_SCHEMA)
    assert association_rules(singles, min_item_count=1).height == 0
    empty = _baskets([])
    assert association_rules(empty).height == 0
    # frequent items but no frequent pair
    assert association_rules(_baskets(HAND_BASKETS), min_support=0.5, min_item_count=1).height == 0


def test_bad_arguments_named():
    baskets = _baskets(HAND_BASKETS)
    with pytest.raises(ValueError, match="algorithm: expected one of"):
        association_rules(baskets, algorithm="eclat")
    with pytest.raises(ValueError, match="min_support"):
        association_rules(baskets, min_support=0.0)
    with pytest.raises(ValueError, match=r"baskets: missing column\(s\) \['item_id'\]"):
        association_rules(baskets.rename({"item_id": "item"}))
    with pytest.raises(ValueError, match="events: expected a non-empty subset"):
        session_baskets(pl.DataFrame(schema=INTERACTIONS_SCHEMA), events=("click",))


@pytest.fixture
def interactions() -> pl.DataFrame:
    rows = [
        # user, item, event, transaction_id, session_id
        (1, 10, "view", None, 0),
        (1, 10, "addtocart", None, 0),
        (1, 11, "addtocart", None, 0),
        (1, 10, "transaction", 500, 0),
        (1, 10, "transaction", 500, 0),  # duplicate row: one basket entry
        (1, 11, "transaction", 500, 0),
        (2, 12, "view", None, 1),
        (2, 13, "addtocart", None, 1),
        (2, 13, "transaction", 501, 2),
    ]
    user, item, event, tid, session = zip(*rows, strict=True)
    n = len(rows)
    return pl.DataFrame(
        {
            "user_id": user,
            "item_id": item,
            "event": event,
            "timestamp": list(range(n)),
            "transaction_id": tid,
            "weight": [1.0] * n,
            "session_id": session,
        },
        schema=INTERACTIONS_SCHEMA,
    )


def test_transaction_baskets(interactions):
    baskets = transaction_baskets(interactions)
    assert baskets.schema == pl.Schema(BASKETS_SCHEMA)
    assert baskets.rows() == [(500, 10), (500, 11), (501, 13)]


def test_session_baskets(interactions):
    assert session_baskets(interactions).rows() == [(0, 10), (0, 11), (1, 13), (2, 13)]
    assert session_baskets(interactions, events=("view",)).rows() == [(0, 10), (1, 12)]
    assert session_baskets(interactions, events="transaction").rows() == [
        (0, 10),
        (0, 11),
        (2, 13),
    ]
