"""The serving rule "available items only" applied to the evaluation lists (issue 13)."""

from __future__ import annotations

import polars as pl
import pytest

from recsys_assets.core.evaluation.holdout import available_only_metrics, with_available_rank


def _lists() -> pl.DataFrame:
    # user 1: items 10 (unavailable), 11, 12 (unknown availability), 13 (unavailable), 14
    # user 2: items 20, 21 (unavailable)
    return pl.DataFrame(
        {
            "model": ["m"] * 7,
            "user_id": [1, 1, 1, 1, 1, 2, 2],
            "rank": [1, 2, 3, 4, 5, 1, 2],
            "item_id": [10, 11, 12, 13, 14, 20, 21],
            "score": [5.0, 4.0, 3.0, 2.0, 1.0, 2.0, 1.0],
        },
        schema_overrides={"rank": pl.Int32},
    )


def _catalog() -> pl.DataFrame:
    return pl.DataFrame(
        {"item_id": [10, 11, 13, 14, 20, 21], "available": [0, 1, 0, 1, 1, 0]},
        schema_overrides={"available": pl.Int8},
    )


def test_available_rank_drops_unavailable_items_and_reranks():
    out = with_available_rank(_lists().reverse(), _catalog())
    assert out["rank"].to_list() == [1, 2, 3, 4, 5, 1, 2]  # sorted back by user, rank
    # unknown availability (item 12, not in the catalogue) is kept, as the service keeps it
    assert out["available_rank"].to_list() == [None, 1, 2, None, 3, 1, None]


def test_available_only_metrics_and_unavailable_share():
    lists = with_available_rank(_lists(), _catalog())
    # user 1 touched 10 (unavailable: a hit all-items, a miss under the rule) and 14;
    # user 2 touched 20
    targets = pl.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 14, 20]})
    out = available_only_metrics(lists, targets, ks=(2, 3))
    # available top-2: user 1 [11, 12] no hit; user 2 [20] hit at 1
    assert out["hit_rate_at_2_available"] == pytest.approx(0.5)
    # available top-3 of user 1: [11, 12, 14], 14 at rank 3 -> recall 1/2
    assert out["recall_at_3_available"] == pytest.approx((0.5 + 1.0) / 2)
    # all-items top-2: {10, 11} and {20, 21}: 2 unavailable of 4
    assert out["unavailable_share_at_2"] == pytest.approx(0.5)
    assert out["unavailable_share_at_3"] == pytest.approx(2 / 5)
