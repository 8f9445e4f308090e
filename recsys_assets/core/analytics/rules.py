"""Baskets and association rules (mlxtend Apriori / FP-Growth on a pruned, sparse one-hot).

A *basket* is a set of distinct items: the items of one transaction (``transaction_baskets``) or
the items a session carted or bought (``session_baskets``).

``association_rules`` never builds the full basket × catalogue one-hot: RetailRocket has 235k
items, and a dense boolean frame of that width would need gigabytes. It prunes first:

1. keep items that occur in at least ``min_item_count`` baskets, and at most the ``max_items``
   most frequent of them (ties broken by the smaller item id);
2. cap large baskets: one with more than ``max_basket_items`` kept items keeps its most
   frequent ones (``rules_bound`` rule 2);
3. drop baskets left with fewer than 2 kept items — a single item makes no rule;
4. the baskets that remain are the population: **``min_support`` and every support in the output
   are fractions of these kept baskets** (``n_baskets`` in the output), not of the input;
5. raise ``min_support`` when needed until the candidate itemsets of length ``<= max_len`` are
   at most ``max_candidates`` (``rules_bound`` rule 3; the effective value is in the
   ``SearchBound``), then drop the columns of items below it: they cannot be in any frequent
   itemset (their baskets stay, supports unchanged);
6. the remainder becomes a pandas frame of ``SparseDtype(bool)`` built from a scipy CSR matrix,
   which mlxtend's ``apriori`` and ``fpgrowth`` accept.

Rules are kept when ``confidence >= min_confidence`` and ``lift >= min_lift``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import polars as pl
import scipy.sparse as sp
from mlxtend.frequent_patterns import apriori, fpgrowth
from mlxtend.frequent_patterns import association_rules as mlxtend_rules

from recsys_assets.core.analytics._checks import (
    check_interactions,
    require_columns,
    require_no_nulls,
)
from recsys_assets.core.analytics.rules_bound import (
    DEFAULT_MAX_BASKET_ITEMS,
    DEFAULT_MAX_BASKET_SUBSETS,
    DEFAULT_MAX_CANDIDATE_CHECKS,
    DEFAULT_MAX_CANDIDATES,
    DEFAULT_MAX_LEN,
    SearchBound,
    bound_support,
    cap_baskets,
    validate_bound,
)
from recsys_assets.core.data.schemas import EVENT_TYPES

BASKETS_SCHEMA = {"basket_id": pl.Int64, "item_id": pl.Int64}

RULES_SCHEMA = {
    "antecedents": pl.List(pl.Int64),
    "consequents": pl.List(pl.Int64),
    "antecedent_support": pl.Float64,
    "consequent_support": pl.Float64,
    "support": pl.Float64,
    "confidence": pl.Float64,
    "lift": pl.Float64,
    "leverage": pl.Float64,
    "conviction": pl.Float64,  # +inf when confidence is 1
    "n_baskets": pl.Int64,  # baskets kept after pruning: the denominator of every support
    "algorithm": pl.Utf8,
}

ALGORITHMS = {"fpgrowth": fpgrowth, "apriori": apriori}

_MLXTEND_METRICS = {
    "antecedent support": "antecedent_support",
    "consequent support": "consequent_support",
    "support": "support",
    "confidence": "confidence",
    "lift": "lift",
    "leverage": "leverage",
    "conviction": "conviction",
}


def transaction_baskets(interactions: pl.DataFrame) -> pl.DataFrame:
    """One row per distinct (transaction, item): ``basket_id`` (= transaction_id), ``item_id``.

    Transaction rows without a ``transaction_id`` cannot be grouped and are left out.
    """
    check_interactions(interactions, ("item_id", "event", "transaction_id"))
    return (
        interactions.filter(
            (pl.col("event") == "transaction") & pl.col("transaction_id").is_not_null()
        )
        .select(basket_id=pl.col("transaction_id"), item_id=pl.col("item_id"))
        .unique()
        .cast(BASKETS_SCHEMA)
        .sort("basket_id", "item_id")
    )


def session_baskets(
    interactions: pl.DataFrame, events: Sequence[str] = ("addtocart", "transaction")
) -> pl.DataFrame:
    """Distinct (session, item) rows among ``events``: ``basket_id`` (= session_id), ``item_id``.

    The default counts carted or bought items: they say "wanted together" far more than views.
    """
    events = [events] if isinstance(events, str) else list(events)
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown or not events:
        raise ValueError(
            f"events: expected a non-empty subset of {list(EVENT_TYPES)}, got {events}"
        )
    check_interactions(interactions, ("item_id", "event", "session_id"))
    return (
        interactions.filter(pl.col("event").is_in(events))
        .select(basket_id=pl.col("session_id"), item_id=pl.col("item_id"))
        .unique()
        .cast(BASKETS_SCHEMA)
        .sort("basket_id", "item_id")
    )


class PrunedBaskets(NamedTuple):
    """The one-hot mlxtend mines, its column item ids and what bounding did."""

    matrix: sp.csr_matrix  # kept baskets × items reaching the effective support
    item_ids: np.ndarray
    bound: SearchBound

    @property
    def min_support(self) -> float:
        """The support handed to mlxtend: counts >= ``min_count_effective`` pass, others not.

        Half a basket below the count, so neither mlxtend's ``support >= min_support`` nor
        FP-Growth's ``ceil(min_support × n)`` can be tipped by floating-point rounding.
        """
        n = max(self.bound.n_baskets, 1)
        return min(1.0, (self.bound.min_count_effective - 0.5) / n)


def prune_baskets(
    baskets: pl.DataFrame,
    *,
    min_item_count: int,
    max_items: int,
    min_support: float,
    max_len: int = DEFAULT_MAX_LEN,
    max_basket_items: int = DEFAULT_MAX_BASKET_ITEMS,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    max_candidate_checks: int = DEFAULT_MAX_CANDIDATE_CHECKS,
    max_basket_subsets: int = DEFAULT_MAX_BASKET_SUBSETS,
) -> PrunedBaskets:
    """Steps 1–6 of the module docstring: a basket × item CSR matrix, its items, the bound.

    Rows are the kept baskets (some may be empty after step 6), columns the surviving items.
    """
    validate_bound(
        max_len, max_basket_items, max_candidates, max_candidate_checks, max_basket_subsets
    )
    require_columns(baskets, ("basket_id", "item_id"), "baskets")
    require_no_nulls(baskets, ("basket_id", "item_id"), "baskets")
    pairs = baskets.select("basket_id", "item_id").unique()
    frequent_items = (
        pairs.group_by("item_id")
        .agg(n=pl.len())
        .filter(pl.col("n") >= min_item_count)
        .sort(["n", "item_id"], descending=[True, False])
        .head(max_items)
        .get_column("item_id")
    )
    pairs = pairs.filter(pl.col("item_id").is_in(frequent_items.implode()))
    pairs, baskets_capped, entries_dropped = cap_baskets(pairs, max_basket_items)
    pairs = pairs.filter(pl.len().over("basket_id") >= 2)
    n_baskets = pairs.get_column("basket_id").n_unique()

    items = (
        pairs.group_by("item_id")
        .agg(n=pl.len())
        .sort(["n", "item_id"], descending=[True, False])
        .with_row_index("col")
    )
    coded = pairs.with_columns(
        row=pl.col("basket_id").rank(method="dense").cast(pl.Int64) - 1
    ).join(items.select("item_id", "col"), on="item_id", how="inner")
    matrix = sp.csr_matrix(
        (
            np.ones(coded.height, dtype=bool),
            (coded.get_column("row").to_numpy(), coded.get_column("col").to_numpy()),
        ),
        shape=(n_baskets, items.height),
    )
    min_count = max(1, math.ceil(min_support * n_baskets - 1e-9))
    support = bound_support(
        matrix,
        min_count=min_count,
        max_len=max_len,
        max_candidates=max_candidates,
        max_candidate_checks=max_candidate_checks,
        max_basket_subsets=max_basket_subsets,
    )
    counts = support.counts
    bound = SearchBound(
        max_len=max_len,
        max_basket_items=max_basket_items,
        max_candidates=max_candidates,
        max_candidate_checks=max_candidate_checks,
        max_basket_subsets=max_basket_subsets,
        n_baskets=n_baskets,
        baskets_capped=baskets_capped,
        basket_items_dropped=entries_dropped,
        min_support_requested=min_support,
        min_support_effective=support.min_count / n_baskets if n_baskets else min_support,
        min_count_requested=min_count,
        min_count_effective=support.min_count,
        items_considered=items.height,
        items_frequent_requested=support.items_frequent_requested,
        items_frequent=int(support.columns.size),
        candidate_pairs_requested=support.candidate_pairs_requested,
        basket_subsets_requested=support.basket_subsets_requested,
        candidates=counts["total"],
        candidate_pairs=counts["candidate_pairs"],
        frequent_pairs=counts["frequent_pairs"],
        candidate_triples=counts["candidate_triples"],
        candidate_checks=counts["checks"],
        basket_subsets=support.basket_subsets,
    )
    return PrunedBaskets(
        matrix[:, support.columns].tocsr(),
        items.get_column("item_id").to_numpy()[support.columns],
        bound,
    )


def _empty_rules() -> pl.DataFrame:
    return pl.DataFrame(schema=RULES_SCHEMA)


def association_rules(
    baskets: pl.DataFrame,
    *,
    algorithm: str = "fpgrowth",
    min_support: float = 0.001,
    min_confidence: float = 0.1,
    min_lift: float = 1.0,
    min_item_count: int = 5,
    max_items: int = 2000,
    max_len: int = DEFAULT_MAX_LEN,
    max_basket_items: int = DEFAULT_MAX_BASKET_ITEMS,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    max_candidate_checks: int = DEFAULT_MAX_CANDIDATE_CHECKS,
    max_basket_subsets: int = DEFAULT_MAX_BASKET_SUBSETS,
) -> pl.DataFrame:
    """Association rules mined from ``baskets`` (columns ``basket_id``, ``item_id``).

    Returns columns ``antecedents, consequents`` (sorted item-id lists), ``antecedent_support,
    consequent_support, support, confidence, lift, leverage, conviction, n_baskets, algorithm``,
    ordered by lift, confidence and support, all descending. Supports are fractions of the
    ``n_baskets`` baskets kept after pruning (module docstring). ``prune_baskets`` then
    ``mine_rules`` give the same table and the ``SearchBound`` as well.
    """
    check_rule_arguments(algorithm, min_support, min_confidence, min_item_count, max_items)
    pruned = prune_baskets(
        baskets,
        min_item_count=min_item_count,
        max_items=max_items,
        min_support=min_support,
        max_len=max_len,
        max_basket_items=max_basket_items,
        max_candidates=max_candidates,
        max_candidate_checks=max_candidate_checks,
        max_basket_subsets=max_basket_subsets,
    )
    return mine_rules(pruned, algorithm=algorithm, min_confidence=min_confidence, min_lift=min_lift)


def check_rule_arguments(
    algorithm: str,
    min_support: float,
    min_confidence: float,
    min_item_count: int,
    max_items: int,
) -> None:
    """Raise ``ValueError`` naming the first bad setting."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm: expected one of {sorted(ALGORITHMS)}, got {algorithm!r}")
    if not 0 < min_support <= 1:
        raise ValueError(f"min_support: expected a fraction in (0, 1], got {min_support}")
    if not 0 <= min_confidence <= 1:
        raise ValueError(f"min_confidence: expected a value in [0, 1], got {min_confidence}")
    if min_item_count < 1 or max_items < 2:
        raise ValueError(
            "min_item_count >= 1 and max_items >= 2 are required, got "
            f"{min_item_count}, {max_items}"
        )


def mine_rules(
    pruned: PrunedBaskets,
    *,
    algorithm: str = "fpgrowth",
    min_confidence: float = 0.1,
    min_lift: float = 1.0,
) -> pl.DataFrame:
    """Run mlxtend's ``algorithm`` on a bounded one-hot and keep the rules that pass."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm: expected one of {sorted(ALGORITHMS)}, got {algorithm!r}")
    matrix, item_ids, bound = pruned
    n_baskets, n_items = matrix.shape
    if n_baskets == 0 or n_items < 2:
        return _empty_rules()

    # Integer column names must start at 0 for pandas' sparse accessor (mlxtend checks it);
    # the column position is mapped back to the item id below.
    with warnings.catch_warnings():
        # pandas 2.x builds Sparse[bool, 0] from a bool matrix and warns about the 0 fill value;
        # 0 == False, so the frame is exactly the boolean one-hot mlxtend wants.
        warnings.filterwarnings(
            "ignore", message=".*fill_value in SparseDtype", category=FutureWarning
        )
        onehot = pd.DataFrame.sparse.from_spmatrix(matrix, columns=pd.RangeIndex(n_items))
    min_support = pruned.min_support
    if algorithm == "apriori":
        # mlxtend's default Apriori materialises a dense baskets × candidates matrix per level
        # (12 GB on 300k baskets); the low-memory path works one prefix at a time.
        frequent = apriori(
            onehot,
            min_support=min_support,
            use_colnames=False,
            max_len=bound.max_len,
            low_memory=True,
        )
    else:
        frequent = fpgrowth(
            onehot, min_support=min_support, use_colnames=False, max_len=bound.max_len
        )
    if (frequent["itemsets"].map(len) >= 2).sum() == 0:
        return _empty_rules()
    rules = mlxtend_rules(
        frequent,
        num_itemsets=n_baskets,
        metric="confidence",
        min_threshold=min_confidence,
        return_metrics=list(_MLXTEND_METRICS),
    )
    rules = rules[rules["lift"] >= min_lift]
    if rules.empty:
        return _empty_rules()

    def to_items(itemsets: pd.Series) -> list[list[int]]:
        # one short Python pass over the (few) rules, not over baskets
        return [sorted(item_ids[list(s)].tolist()) for s in itemsets]

    out = pl.DataFrame(
        {
            "antecedents": to_items(rules["antecedents"]),
            "consequents": to_items(rules["consequents"]),
            **{
                ours: rules[theirs].to_numpy(dtype=np.float64)
                for theirs, ours in _MLXTEND_METRICS.items()
            },
        }
    )
    return (
        out.with_columns(n_baskets=pl.lit(n_baskets), algorithm=pl.lit(algorithm))
        .cast(RULES_SCHEMA)
        .select(list(RULES_SCHEMA))
        .sort(
            ["lift", "confidence", "support", "antecedents", "consequents"],
            descending=[True, True, True, False, False],
        )
    )
