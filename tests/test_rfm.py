"""RFM: hand-computed recency/frequency/monetary, price as of purchase, tie-aware quintiles."""

from __future__ import annotations

import itertools

import polars as pl
import pytest

from recsys_assets.core.analytics.rfm import (
    RFM_SCHEMA,
    SEGMENT_SUMMARY_SCHEMA,
    SEGMENTS,
    quintile_score,
    rfm_segment_summary,
    rfm_segments,
    segment_of,
)

D = 86_400_000


@pytest.fixture
def purchases() -> pl.DataFrame:
    rows = [
        # user 1: one transaction of items 10 and 11 on day 0
        (1, 10, "transaction", 0, 1),
        (1, 11, "transaction", 0, 1),
        (1, 10, "view", 0, None),
        # user 2: item 10 on day 5 — the last event of the data (default reference)
        (2, 10, "transaction", 5 * D, 2),
        # user 3: three transactions, the last one without an id
        (3, 12, "transaction", 1 * D, 3),
        (3, 10, "transaction", 2 * D, 4),
        (3, 11, "transaction", 3 * D, None),
        (4, 10, "view", 4 * D, None),  # never buys: no RFM row
    ]
    user, item, event, ts, tid = zip(*rows, strict=True)
    return pl.DataFrame(
        {"user_id": user, "item_id": item, "event": event, "timestamp": ts, "transaction_id": tid},
        schema={
            "user_id": pl.Int64,
            "item_id": pl.Int64,
            "event": pl.Utf8,
            "timestamp": pl.Int64,
            "transaction_id": pl.Int64,
        },
    )


@pytest.fixture
def history() -> pl.DataFrame:
    rows = [
        (10, 0, "price", 5.0),  # in force from day 0 (a snapshot at the purchase instant counts)
        (10, 3 * D, "price", 7.0),  # a change after user 3's day-2 purchase: must not be used
        (11, 1 * D, "price", 2.0),  # after user 1's day-0 purchase: unknown for user 1
        (11, 2 * D + D // 2, "price", float("nan")),  # a broken snapshot is skipped
        (11, 0, "available", 1.0),  # other properties are ignored
        (12, 9 * D, "price", 4.0),  # only after user 3 bought it: unknown
    ]
    item, ts, prop, value = zip(*rows, strict=True)
    return pl.DataFrame({"item_id": item, "timestamp": ts, "property": prop, "value": value})


def test_rfm_values_by_hand(purchases, history):
    rfm = rfm_segments(purchases, history)
    assert rfm.schema == pl.Schema(RFM_SCHEMA)
    assert rfm["user_id"].to_list() == [1, 2, 3]
    # reference = last event = day 5. recency: user1 5 - 0, user2 5 - 5, user3 5 - 3
    assert rfm["recency_days"].to_list() == [5.0, 0.0, 2.0]
    # user 3: ids 3 and 4 plus one id-less transaction
    assert rfm["frequency"].to_list() == [1, 1, 3]
    # user1: item10 @0 -> 5, item11 @0 -> unknown            => 5,  known 1/2
    # user2: item10 @5 -> 7 (changed on day 3)                 => 7,  known 1/1
    # user3: item12 unknown, item10 @2 -> 5 (not 7), item11 @3 -> 2 (NaN skipped) => 7, known 2/3
    assert rfm["monetary"].to_list() == [5.0, 7.0, 7.0]
    assert rfm["monetary_known_share"].to_list() == pytest.approx([0.5, 1.0, 2 / 3])
    # scores = 1 + floor(5 * strictly_worse / 3)
    # recency 5, 0, 2 (lower better): worse-than counts 0, 2, 1 -> 1, 4, 2
    # frequency 1, 1, 3: 0, 0, 2 -> 1, 1, 4; monetary 5, 7, 7: 0, 1, 1 -> 1, 2, 2
    assert rfm["r_score"].to_list() == [1, 4, 2]
    assert rfm["f_score"].to_list() == [1, 1, 4]
    assert rfm["m_score"].to_list() == [1, 2, 2]
    assert rfm["rfm_score"].to_list() == ["111", "412", "242"]
    # FM = round_half_up((F+M)/2): 1, 2, 3 -> R1/FM1 Lost, R4/FM2 Potential loyalist, R2/FM3 At risk
    assert rfm["segment"].to_list() == ["Lost", "Potential loyalist", "At risk"]


def test_reference_ignores_later_purchases(purchases, history):
    rfm = rfm_segments(purchases, history, reference_ms=4 * D)
    assert rfm["user_id"].to_list() == [1, 3]  # user 2 bought on day 5
    assert rfm["recency_days"].to_list() == [4.0, 1.0]


def test_missing_price_everywhere_counts_zero(purchases, history):
    rfm = rfm_segments(purchases, history.filter(pl.col("property") != "price"))
    assert rfm["monetary"].to_list() == [0.0, 0.0, 0.0]
    assert rfm["monetary_known_share"].to_list() == [0.0, 0.0, 0.0]
    assert rfm["m_score"].to_list() == [1, 1, 1]  # all tied


@pytest.mark.parametrize(
    ("values", "higher_is_better", "expected"),
    [
        # 10 users, two tied on 20: min ranks 1,2,2,4..10 -> 1 + 5*(rank-1)//10
        ([10, 20, 20, 30, 40, 50, 60, 70, 80, 90], True, [1, 1, 1, 2, 3, 3, 4, 4, 5, 5]),
        ([1, 2, 3, 4, 5], True, [1, 2, 3, 4, 5]),
        ([0.0, 1.0, 2.0, 3.0, 4.0], False, [5, 4, 3, 2, 1]),
        ([7, 7, 7, 7], True, [1, 1, 1, 1]),
        ([3], True, [1]),
        ([1, 2], True, [1, 3]),
        ([2, 1, 1], True, [4, 1, 1]),
    ],
)
def test_quintile_scores(values, higher_is_better, expected):
    frame = pl.DataFrame({"v": values})
    scores = frame.select(quintile_score(pl.col("v"), higher_is_better=higher_is_better))
    assert scores.to_series().to_list() == expected


@pytest.mark.parametrize(
    ("r", "f", "m", "segment"),
    [
        (5, 5, 5, "Champions"),
        (5, 4, 3, "Champions"),  # FM = 4
        (5, 1, 1, "New"),
        (5, 1, 5, "Potential loyalist"),  # FM = 3
        (4, 1, 1, "Promising"),
        (4, 4, 5, "Loyal"),
        (3, 5, 3, "Loyal"),
        (3, 3, 3, "Need attention"),
        (3, 1, 2, "Hibernating"),  # FM = 2
        (2, 1, 2, "Hibernating"),
        (1, 3, 4, "At risk"),  # FM = 4
        (2, 5, 5, "Cannot lose them"),
        (1, 5, 4, "Cannot lose them"),  # FM = 5 (4.5 rounds up)
        (1, 1, 1, "Lost"),
        (1, 2, 1, "Lost"),
    ],
)
def test_segment_map(r, f, m, segment):
    frame = pl.DataFrame({"r": [r], "f": [f], "m": [m]})
    assert frame.select(segment_of(pl.col("r"), pl.col("f"), pl.col("m"))).item() == segment


def test_segment_map_covers_every_score():
    grid = pl.DataFrame(list(itertools.product(range(1, 6), repeat=3)), orient="row")
    names = grid.select(segment_of(pl.col("column_0"), pl.col("column_1"), pl.col("column_2")))
    assert names.to_series().null_count() == 0
    assert set(names.to_series()) == set(SEGMENTS)


def test_summary(purchases, history):
    summary = rfm_segment_summary(rfm_segments(purchases, history))
    assert summary.schema == pl.Schema(SEGMENT_SUMMARY_SCHEMA)
    assert summary["segment"].to_list() == list(SEGMENTS)
    assert summary["users"].sum() == 3
    at_risk = summary.filter(pl.col("segment") == "At risk").to_dicts()[0]
    assert at_risk["users"] == 1 and at_risk["share"] == pytest.approx(1 / 3)
    assert (at_risk["mean_recency_days"], at_risk["mean_frequency"], at_risk["mean_monetary"]) == (
        2.0,
        3.0,
        7.0,
    )
    champions = summary.filter(pl.col("segment") == "Champions").to_dicts()[0]
    assert champions["users"] == 0 and champions["mean_monetary"] is None


def test_no_buyers_gives_empty_frame(purchases, history):
    views = purchases.filter(pl.col("event") == "view")
    assert rfm_segments(views, history).schema == pl.Schema(RFM_SCHEMA)
    assert rfm_segments(views, history).height == 0
    assert rfm_segment_summary(rfm_segments(views, history))["share"].sum() == 0.0


def test_bad_history_named(purchases, history):
    with pytest.raises(ValueError, match=r"history: missing column\(s\) \['value'\]"):
        rfm_segments(purchases, history.drop("value"))
