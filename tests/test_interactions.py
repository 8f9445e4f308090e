"""Cleaning: duplicates, bot rule, weights, 30-minute sessions — all numbers hand-computed."""

from __future__ import annotations

import polars as pl
import pytest

from recsys_assets.core.data.interactions import BotRule, bot_visitors, clean_interactions
from recsys_assets.core.data.schemas import INTERACTIONS_SCHEMA, RAW_EVENTS_SCHEMA

T0 = 1_433_000_400_000  # 2015-05-30 15:40:00 UTC (not on an hour boundary)
HOUR0 = 1_433_001_600_000  # 2015-05-30 16:00:00 UTC
MIN = 60_000


def events(rows: list[tuple]) -> pl.DataFrame:
    """rows: (timestamp, visitorid, event, itemid, transactionid)."""
    return pl.DataFrame(rows, schema=RAW_EVENTS_SCHEMA, orient="row")


def test_output_schema_sorted_and_weighted():
    raw = events(
        [
            (T0 + 5 * MIN, 2, "view", 10, None),
            (T0 + 2 * MIN, 1, "transaction", 11, 7),
            (T0, 2, "addtocart", 12, None),
            (T0 + 1 * MIN, 1, "view", 11, None),
        ]
    )
    out, report = clean_interactions(raw)
    assert out.schema == pl.Schema(INTERACTIONS_SCHEMA)
    assert out.select("user_id", "timestamp").rows() == [
        (1, T0 + MIN),
        (1, T0 + 2 * MIN),
        (2, T0),
        (2, T0 + 5 * MIN),
    ]
    assert out["weight"].to_list() == [1.0, 5.0, 3.0, 1.0]
    assert out["transaction_id"].to_list() == [None, 7, None, None]
    assert (report.rows_in, report.rows_out, report.users, report.items) == (4, 4, 2, 3)


def test_custom_weights():
    raw = events([(T0, 1, "view", 1, None), (T0 + 1, 1, "addtocart", 1, None)])
    out, _ = clean_interactions(raw, weights={"view": 0.5, "addtocart": 2.0, "transaction": 9.0})
    assert out["weight"].to_list() == [0.5, 2.0]


def test_missing_weight_is_an_error():
    raw = events([(T0, 1, "view", 1, None), (T0 + 1, 1, "addtocart", 1, None)])
    with pytest.raises(ValueError, match="no weight for event type"):
        clean_interactions(raw, weights={"view": 1.0})


def test_same_millisecond_events_are_ordered_view_cart_transaction():
    raw = events(
        [
            (T0, 1, "transaction", 5, 3),
            (T0, 1, "view", 5, None),
            (T0, 1, "addtocart", 5, None),
        ]
    )
    out, _ = clean_interactions(raw)
    assert out["event"].to_list() == ["view", "addtocart", "transaction"]


def test_duplicates_dropped_and_counted_once_when_the_file_is_read(tmp_path):
    """Exact repeats are dropped (and counted) by the reader; cleaning gets them no more."""
    from recsys_assets.core.data.retailrocket import read_events

    path = tmp_path / "events.csv"
    row = f"{T0},1,view,5,"
    path.write_text(
        "\n".join(
            ["timestamp,visitorid,event,itemid,transactionid", row, row, row, f"{T0 + 1},1,view,6,"]
        )
        + "\n"
    )
    raw, read = read_events(path)
    assert (read.rows_read, read.duplicates_dropped, read.rows) == (4, 2, 2)
    out, report = clean_interactions(raw)
    assert (report.rows_in, report.rows_out) == (2, 2)
    assert out["item_id"].to_list() == [5, 6]


def test_sessions_split_strictly_after_the_gap():
    # user 1: 0, +30 min (exactly the gap: same session), +60 min +1 ms (> gap: new session),
    #         +65 min (same); user 2 starts a new session even 1 ms later.
    raw = events(
        [
            (T0, 1, "view", 1, None),
            (T0 + 30 * MIN, 1, "view", 2, None),
            (T0 + 60 * MIN + 1, 1, "view", 3, None),
            (T0 + 65 * MIN, 1, "view", 4, None),
            (T0 + 65 * MIN + 1, 2, "view", 5, None),
            (T0 + 300 * MIN, 2, "view", 6, None),
        ]
    )
    out, report = clean_interactions(raw)
    assert out["session_id"].to_list() == [0, 0, 1, 1, 2, 3]
    assert report.sessions == 4


def test_session_gap_parameter():
    raw = events([(T0, 1, "view", 1, None), (T0 + 11 * MIN, 1, "view", 2, None)])
    assert clean_interactions(raw)[0]["session_id"].to_list() == [0, 0]
    assert clean_interactions(raw, session_gap_minutes=10)[0]["session_id"].to_list() == [0, 1]


def test_session_ids_are_dense_and_global_in_user_time_order():
    raw = events(
        [
            (T0 + 100 * MIN, 9, "view", 1, None),
            (T0, 3, "view", 1, None),
            (T0 + 100 * MIN, 3, "view", 1, None),
            (T0, 9, "view", 1, None),
        ]
    )
    out, _ = clean_interactions(raw)
    assert out.select("user_id", "session_id").rows() == [(3, 0), (3, 1), (9, 2), (9, 3)]


def test_bot_rule_total_events():
    rule = BotRule(max_events_total=5, max_events_per_hour=100)
    rows = [(T0 + i * 120 * MIN, 1, "view", i, None) for i in range(6)]  # 6 > 5: bot
    rows += [(T0 + i * 120 * MIN, 2, "view", i, None) for i in range(5)]  # exactly 5: kept
    out, report = clean_interactions(events(rows), bot_rule=rule)
    assert (report.bot_visitors, report.bot_events_dropped) == (1, 6)
    assert out["user_id"].unique().to_list() == [2]
    assert report.rows_out == 5


def test_bot_rule_per_clock_hour():
    rule = BotRule(max_events_total=1000, max_events_per_hour=3)
    # visitor 1: 4 events within 16:00-16:59 -> bot
    rows = [(HOUR0 + i * MIN, 1, "view", i, None) for i in range(4)]
    # visitor 2: 4 events within 4 minutes but straddling 17:00 (2 + 2) -> kept
    rows += [(HOUR0 + 58 * MIN + i * MIN, 2, "view", i, None) for i in range(4)]
    # visitor 3: 3 events in one hour (the limit, not above it) -> kept
    rows += [(HOUR0 + i * MIN, 3, "view", i, None) for i in range(3)]
    raw = events(rows)
    assert bot_visitors(raw, rule).to_list() == [1]
    out, report = clean_interactions(raw, bot_rule=rule)
    assert (report.bot_visitors, report.bot_events_dropped, report.rows_out) == (1, 4, 7)
    assert sorted(out["user_id"].unique().to_list()) == [2, 3]


def test_default_bot_rule_keeps_ordinary_visitors():
    rows = [(T0 + i * 20 * MIN, 1, "view", i % 7, None) for i in range(300)]  # 3 per hour
    _, report = clean_interactions(events(rows))
    assert report.bot_visitors == 0


def test_missing_column_is_an_error():
    with pytest.raises(ValueError, match="lacks column"):
        clean_interactions(events([(T0, 1, "view", 1, None)]).drop("itemid"))
