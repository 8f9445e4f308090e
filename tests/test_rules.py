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
    mine_rules,
    prune_baskets,
    session_baskets,
    transaction_baskets,
)
from recsys_assets.core.analytics.rules_bound import (
    DEFAULT_MAX_BASKET_ITEMS,
    DEFAULT_MAX_CANDIDATES,
    cap_baskets,
)
from recsys_assets.core.data.schemas import INTERACTIONS_SCHEMA

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

    matrix, item_ids, bound = prune_baskets(
        frame, min_item_count=5, max_items=2000, min_support=0.001
    )
    assert not bound.raised and bound.baskets_capped == 0
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
    matrix, item_ids, _ = prune_baskets(
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


# --- the search bound (issue 7.4): decided before mlxtend runs, whatever the baskets ---------


def _dense_baskets(n_baskets: int, n_items: int, low: int, high: int, seed: int = 0):
    """Baskets of `low`..`high` distinct items drawn by Zipf-like popularity (sessions that
    cart tens of items): without a bound, every item is frequent and the pairs explode."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    keys = -np.log(rng.random((n_baskets, n_items))) / weights  # draw without replacement
    order = np.argsort(keys, axis=1)
    sizes = rng.integers(low, high + 1, n_baskets)
    mask = np.arange(n_items)[None, :] < sizes[:, None]
    rows = np.broadcast_to(np.arange(n_baskets)[:, None], order.shape)[mask]
    return pl.DataFrame({"basket_id": rows, "item_id": order[mask]}, schema=BASKETS_SCHEMA)


def test_dense_baskets_are_bounded_before_mining():
    baskets = _dense_baskets(400, 600, 20, 60)
    pruned = prune_baskets(baskets, min_item_count=1, max_items=2000, min_support=0.002)
    bound = pruned.bound
    # Unbounded, Apriori would test every pair of the ~580 frequent items and FP-Growth walk
    # millions of basket subsets: both over their caps.
    assert bound.items_frequent_requested > 500
    assert bound.candidate_pairs_requested > bound.max_candidates == DEFAULT_MAX_CANDIDATES
    assert bound.basket_subsets_requested > bound.max_basket_subsets
    assert bound.raised and bound.min_support_effective > bound.min_support_requested
    assert bound.min_support_effective == bound.min_count_effective / bound.n_baskets
    # every basket above 30 items was capped, none below
    sizes = baskets.group_by("basket_id").len()["len"].cast(pl.Int64)
    assert bound.baskets_capped == int((sizes > DEFAULT_MAX_BASKET_ITEMS).sum()) > 0
    assert bound.basket_items_dropped == int((sizes - DEFAULT_MAX_BASKET_ITEMS).clip(0).sum())
    assert bound.n_baskets == 400  # capped baskets stay in the support denominator
    assert np.diff(pruned.matrix.indptr).max() <= DEFAULT_MAX_BASKET_ITEMS
    # the estimates at the effective support fit every cap
    assert bound.candidates <= bound.max_candidates
    assert bound.candidate_checks <= bound.max_candidate_checks
    assert bound.basket_subsets <= bound.max_basket_subsets
    assert pruned.matrix.shape[1] == bound.items_frequent < bound.items_frequent_requested
    # ... and the rules are computed, the same by both algorithms
    fp = mine_rules(pruned, algorithm="fpgrowth", min_confidence=0.0, min_lift=0.0)
    ap = mine_rules(pruned, algorithm="apriori", min_confidence=0.0, min_lift=0.0)
    assert fp.height > 0 and fp.schema == pl.Schema(RULES_SCHEMA)
    assert (fp["support"] >= bound.min_support_effective - 1e-12).all()
    key = ["antecedents", "consequents"]
    assert fp.drop("algorithm").sort(key).equals(ap.drop("algorithm").sort(key))
    meta = bound.as_metadata()
    assert meta["min_support_raised"] is True
    for field in ("min_support_requested", "min_support_effective", "baskets_capped",
                  "basket_items_dropped", "max_len", "max_candidates", "candidates"):  # fmt: skip
        assert field in meta


def _brute_force_counts(matrix, t: int) -> tuple[int, int, int]:
    """Frequent pairs, triples with all three pairs frequent, frequent triples, Apriori's
    checks — by loops."""
    from itertools import combinations

    dense = matrix.toarray()
    items = [i for i in range(dense.shape[1]) if dense[:, i].sum() >= t]
    frequent = {(a, b) for a, b in combinations(items, 2) if (dense[:, a] & dense[:, b]).sum() >= t}
    candidates = frequent_triples = 0
    for a, b, c in combinations(items, 3):
        if {(a, b), (a, c), (b, c)} <= frequent:
            candidates += 1
            frequent_triples += int((dense[:, a] & dense[:, b] & dense[:, c]).sum() >= t)
    # Apriori's checks: a mask over all baskets per prefix, then per candidate the baskets
    # holding its prefix (pairs extend an item, triples a frequent pair, by a later column)
    count = {i: int(dense[:, i].sum()) for i in items}
    checks = dense.shape[0] * (len(items) + len(frequent))
    checks += sum(count[a] * sum(b > a for b in items) for a in items)
    for a, b in frequent:
        later = [c for c in items if c > b and {(a, c), (b, c)} <= frequent]
        checks += int((dense[:, a] & dense[:, b]).sum()) * len(later)
    return len(frequent), candidates, frequent_triples, checks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_candidate_estimates_match_brute_force(seed):
    baskets = _dense_baskets(150, 40, 3, 12, seed=seed)
    pruned = prune_baskets(
        baskets, min_item_count=1, max_items=2000, min_support=0.08, max_candidates=10**9
    )
    bound = pruned.bound
    assert not bound.raised
    pairs, triples, frequent_triples, checks = _brute_force_counts(
        pruned.matrix, bound.min_count_effective
    )
    assert bound.candidate_checks == checks
    assert bound.frequent_pairs == pairs
    assert bound.candidate_triples == triples  # the triangles of the frequent-pair graph
    assert bound.candidate_pairs == bound.items_frequent * (bound.items_frequent - 1) // 2
    found = mine_rules(pruned, algorithm="fpgrowth", min_confidence=0.0, min_lift=0.0)
    sizes = (found["antecedents"].list.len() + found["consequents"].list.len()).to_list()
    assert 0 < frequent_triples <= triples
    assert sizes.count(3) == 6 * frequent_triples  # each frequent triple makes six rules


def test_effective_support_is_the_smallest_that_fits():
    baskets = _dense_baskets(300, 120, 5, 25, seed=3)
    caps = dict(max_candidates=800, max_candidate_checks=10**12, max_basket_subsets=10**12)
    bound = prune_baskets(baskets, min_item_count=1, max_items=2000, min_support=0.01, **caps).bound
    assert bound.raised and bound.candidates <= 800
    # one basket less is over the cap: asking for it explicitly is raised back to the same count
    below = (bound.min_count_effective - 1) / bound.n_baskets
    again = prune_baskets(baskets, min_item_count=1, max_items=2000, min_support=below, **caps)
    assert again.bound.min_count_requested == bound.min_count_effective - 1
    assert again.bound.raised and again.bound.min_count_effective == bound.min_count_effective
    # a cap on FP-Growth's basket subsets raises it too, and is met
    tight = prune_baskets(
        baskets, min_item_count=1, max_items=2000, min_support=0.01,
        max_basket_subsets=2_000,
    ).bound  # fmt: skip
    assert tight.raised and tight.basket_subsets <= 2_000 < tight.basket_subsets_requested


def test_large_baskets_keep_their_most_frequent_items():
    # item counts: 1 -> 4, 2 -> 3, 3 -> 3, 4 -> 2, 5 -> 1; basket 0 holds all five
    pairs = _baskets([[1, 2, 3, 4, 5], [1, 2], [1, 3], [1, 4, 2, 3]])
    kept, capped, dropped = cap_baskets(pairs, max_basket_items=3)
    assert (capped, dropped) == (2, 3)
    by_basket = dict(kept.group_by("basket_id").agg(pl.col("item_id").sort()).iter_rows())
    # most frequent first, ties (2 and 3, both 3 baskets) to the smaller id
    assert by_basket == {0: [1, 2, 3], 1: [1, 2], 2: [1, 3], 3: [1, 2, 3]}
    assert cap_baskets(pairs, max_basket_items=5) == (pairs, 0, 0)


def test_bound_does_not_touch_ordinary_baskets():
    """Transaction-sized baskets with a planted bundle: nothing raised, nothing capped."""
    rng = np.random.default_rng(5)
    n = 3_000
    sizes = rng.integers(1, 5, n)
    items = rng.integers(10, 400, sizes.sum())
    bundle = np.flatnonzero(rng.random(n) < 0.05)
    frame = pl.DataFrame(
        {
            "basket_id": np.concatenate([np.repeat(np.arange(n), sizes), np.repeat(bundle, 3)]),
            "item_id": np.concatenate([items, np.tile([1, 2, 3], bundle.size)]),
        },
        schema=BASKETS_SCHEMA,
    )
    pruned = prune_baskets(frame, min_item_count=5, max_items=2000, min_support=0.002)
    assert not pruned.bound.raised and pruned.bound.baskets_capped == 0
    found = mine_rules(pruned, min_confidence=0.5, min_lift=2.0)
    itemsets = {frozenset(a + c) for a, c in found.select("antecedents", "consequents").rows()}
    assert {frozenset(s) for s in ([1, 2, 3], [1, 2], [1, 3], [2, 3])} <= itemsets
    assert all(len(s & {1, 2, 3}) >= 2 for s in itemsets)  # chance items ride on the bundle


def test_bound_settings_are_checked():
    baskets = _baskets(HAND_BASKETS)
    for setting, value in [
        ("max_len", 1),
        ("max_basket_items", 1),
        ("max_candidates", 2),
        ("max_candidate_checks", 0),
        ("max_basket_subsets", 0),
    ]:
        with pytest.raises(ValueError, match=f"^{setting}: expected"):
            association_rules(baskets, **{setting: value})


def test_asset_metadata_reports_the_bound():
    """The association_rules asset attaches each basket type's SearchBound as metadata."""
    from dagster import build_asset_context

    from recsys_assets.defs.analytics.assets import RulesConfig
    from recsys_assets.defs.analytics.assets import association_rules as rules_asset

    dense = _dense_baskets(300, 400, 20, 50, seed=4)
    n = dense.height
    interactions = pl.DataFrame(
        {
            "user_id": dense["basket_id"],
            "item_id": dense["item_id"],
            "event": ["addtocart"] * n,
            "timestamp": np.arange(n),
            "transaction_id": [None] * n,
            "weight": [1.0] * n,
            "session_id": dense["basket_id"],
        },
        schema=INTERACTIONS_SCHEMA,
    )
    context = build_asset_context()
    table = rules_asset(context, RulesConfig(), interactions)
    meta = context.get_output_metadata("result")
    session = meta["search_bound"].data["session"]  # a JSON metadata value
    assert session["min_support_raised"] is True
    assert session["min_support_effective"] > session["min_support_requested"] == 0.002
    assert session["baskets_capped"] > 0 and session["max_len"] == 3
    assert session["candidates"] <= session["max_candidates"]
    assert set(table["basket_type"]) == {"session"}
    assert (
        table.filter(pl.col("algorithm") == "fpgrowth").height
        == table.filter(pl.col("algorithm") == "apriori").height
        > 0
    )
