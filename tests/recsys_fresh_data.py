"""A new day of events for the raw folder: the last day's events again, one day later."""

from __future__ import annotations

from pathlib import Path

import polars as pl

DAY_MS = 86_400_000


def append_day(events_csv: Path, fraction: float = 1.0) -> str:
    """Append a copy of the file's last day shifted by one day (new transaction ids); return
    the new day's key. The rows keep the file's columns and formats exactly."""
    frame = pl.read_csv(events_csv, schema_overrides={"transactionid": pl.Int64})
    last = frame["timestamp"].max()
    day_start = last - last % DAY_MS
    day = frame.filter(pl.col("timestamp") >= day_start)
    if fraction < 1.0:
        day = day.sample(fraction=fraction, seed=0)
    next_tx = (frame["transactionid"].max() or 0) + 1
    shifted = day.with_columns(
        pl.col("timestamp") + DAY_MS,
        pl.when(pl.col("transactionid").is_not_null())
        .then(pl.int_range(pl.len()) + next_tx)
        .otherwise(None)
        .alias("transactionid"),
    )
    with open(events_csv, "a") as out:
        shifted.write_csv(out, include_header=False)
    new_day = (day_start + DAY_MS) // 1000
    import datetime as dt

    return dt.datetime.fromtimestamp(new_day, dt.UTC).strftime("%Y-%m-%d")
