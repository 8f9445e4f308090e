"""Activity heat-map: events per weekday × hour of day, in UTC.

Timestamps are Unix milliseconds in UTC and are read as UTC, never in the machine's local zone,
so the map is the same wherever it is computed. ``weekday`` runs 0 = Monday … 6 = Sunday (as
Python's ``datetime.weekday``), ``hour`` 0 … 23. All 168 cells are present, empty ones with zeros,
so the table can be reshaped into a 7 × 24 grid without gaps.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from recsys_assets.core.analytics._checks import check_interactions

HEATMAP_SCHEMA = {
    "weekday": pl.Int32,
    "hour": pl.Int32,
    "events": pl.Int64,
    "views": pl.Int64,
    "addtocarts": pl.Int64,
    "transactions": pl.Int64,
    "users": pl.Int64,  # distinct users active in the cell
}


def activity_heatmap(interactions: pl.DataFrame) -> pl.DataFrame:
    """Event counts and distinct users per (weekday, hour) UTC cell, 168 rows, sorted."""
    check_interactions(interactions, ("user_id", "event", "timestamp"))
    moment = pl.from_epoch("timestamp", time_unit="ms")
    cells = (
        interactions.select(
            "user_id",
            "event",
            # polars numbers ISO weekdays 1 = Monday … 7 = Sunday
            weekday=(moment.dt.weekday() - 1).cast(pl.Int32),
            hour=moment.dt.hour().cast(pl.Int32),
        )
        .group_by("weekday", "hour")
        .agg(
            events=pl.len(),
            views=(pl.col("event") == "view").sum(),
            addtocarts=(pl.col("event") == "addtocart").sum(),
            transactions=(pl.col("event") == "transaction").sum(),
            users=pl.col("user_id").n_unique(),
        )
    )
    grid = pl.DataFrame({"weekday": list(range(7))}, schema={"weekday": pl.Int32}).join(
        pl.DataFrame({"hour": list(range(24))}, schema={"hour": pl.Int32}), how="cross"
    )
    counts = list(HEATMAP_SCHEMA)[2:]
    return (
        grid.join(cells, on=["weekday", "hour"], how="left")
        .with_columns(pl.col(counts).fill_null(0))
        .cast(HEATMAP_SCHEMA)
        .select(list(HEATMAP_SCHEMA))
        .sort("weekday", "hour")
    )


def heatmap_matrix(heatmap: pl.DataFrame, value: str = "events") -> np.ndarray:
    """The 7 × 24 grid (rows Monday … Sunday, columns hours) of one heat-map column."""
    if value not in heatmap.columns or value in ("weekday", "hour"):
        raise ValueError(f"heatmap: no value column {value!r}; columns: {heatmap.columns}")
    ordered = heatmap.sort("weekday", "hour")
    if ordered.height != 168:
        raise ValueError(f"heatmap: expected 168 cells, got {ordered.height}")
    return ordered.get_column(value).cast(pl.Float64).to_numpy().reshape(7, 24)
