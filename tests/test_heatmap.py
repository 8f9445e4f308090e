"""Activity heat-map: hand-placed events land in the right UTC weekday/hour cell."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from recsys_assets.core.analytics.heatmap import HEATMAP_SCHEMA, activity_heatmap, heatmap_matrix


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
def events() -> pl.DataFrame:
    rows = [
        # 2015-05-03 is a Sunday; 23:30 UTC would already be Monday in UTC+1 and east of it
        (1, "view", _ms(2015, 5, 3, 23, 30)),
        # Monday 00:00:00.000 and 00:59:59.999 UTC share the cell (0, 0)
        (1, "view", _ms(2015, 5, 4, 0, 0)),
        (2, "addtocart", _ms(2015, 5, 4, 0, 0) + 1),
        (1, "transaction", _ms(2015, 5, 4, 1, 0) - 1),
        (2, "view", _ms(2015, 5, 4, 1, 0)),  # next hour
        (3, "view", 0),  # 1970-01-01 was a Thursday
    ]
    user, event, ts = zip(*rows, strict=True)
    return pl.DataFrame({"user_id": user, "event": event, "timestamp": ts})


def _cell(heatmap: pl.DataFrame, weekday: int, hour: int) -> dict:
    return heatmap.filter((pl.col("weekday") == weekday) & (pl.col("hour") == hour)).to_dicts()[0]


def test_cells_in_utc(events, monkeypatch):
    # a local time zone far from UTC must not move any event
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        heatmap = activity_heatmap(events)
    finally:
        monkeypatch.undo()
        time.tzset()

    assert heatmap.schema == pl.Schema(HEATMAP_SCHEMA)
    assert heatmap.height == 168
    assert heatmap.select("weekday", "hour").is_unique().all()
    assert _cell(heatmap, 6, 23) == {
        "weekday": 6, "hour": 23, "events": 1, "views": 1, "addtocarts": 0, "transactions": 0,
        "users": 1,
    }  # fmt: skip
    assert _cell(heatmap, 0, 0) == {
        "weekday": 0, "hour": 0, "events": 3, "views": 1, "addtocarts": 1, "transactions": 1,
        "users": 2,
    }  # fmt: skip
    assert _cell(heatmap, 0, 1)["events"] == 1
    assert _cell(heatmap, 3, 0)["views"] == 1
    # every other cell is a filled zero, not a missing row
    assert heatmap["events"].sum() == events.height
    assert (heatmap["events"] > 0).sum() == 4


def test_matrix_layout(events):
    grid = heatmap_matrix(activity_heatmap(events))
    assert grid.shape == (7, 24)
    expected = np.zeros((7, 24))
    expected[6, 23], expected[0, 0], expected[0, 1], expected[3, 0] = 1, 3, 1, 1
    np.testing.assert_array_equal(grid, expected)
    with pytest.raises(ValueError, match="no value column 'clicks'"):
        heatmap_matrix(activity_heatmap(events), "clicks")


def test_empty_input_gives_zero_grid(events):
    heatmap = activity_heatmap(events.clear())
    assert heatmap.height == 168 and heatmap["events"].sum() == 0 and heatmap["users"].max() == 0


def test_missing_timestamp_named(events):
    with pytest.raises(ValueError, match=r"interactions: missing column\(s\) \['timestamp'\]"):
        activity_heatmap(events.drop("timestamp"))
    with_null = events.with_columns(
        timestamp=pl.when(pl.int_range(pl.len()) == 4).then(None).otherwise("timestamp")
    )
    with pytest.raises(ValueError, match="interactions: null 'timestamp' at row 4"):
        activity_heatmap(with_null)
