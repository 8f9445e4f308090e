"""What changed in the raw folder since the sensors last looked: days of events, other files.

Pure functions on file contents and stored cursors (the sensors in ``sensors.py`` wrap them),
so "exactly the affected days" is decided by comparing a digest of each day's rows, not the
file's modification time alone: appending a day reloads that day, editing one day reloads it,
and a day that vanished from the file is reloaded (its stored rows are cleared).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import polars as pl


def file_stamp(path: Path) -> str:
    """Cheap change detector: modification time and size (a digest is computed only on change)."""
    stat = path.stat()
    return f"{stat.st_mtime_ns}:{stat.st_size}"


def day_digests(events: pl.DataFrame) -> dict[str, str]:
    """One digest per UTC day of a validated events frame: row count and an order-free hash.

    Exact duplicate rows are dropped by the reader, so XOR of row hashes is a fair fingerprint.
    """
    from recsys_assets.core.data.retailrocket import event_day

    table = (
        events.with_columns(
            event_day().alias("_day"), pl.struct(events.columns).hash(7).alias("_h")
        )
        .group_by("_day")
        .agg(pl.len().alias("n"), pl.col("_h").bitwise_xor().alias("h"))
    )
    return {day: f"{n}:{h:016x}" for day, n, h in table.iter_rows()}


def affected_days(
    current: dict[str, str], previous: dict[str, str] | None, stale: set[str]
) -> list[str]:
    """Days to (re)load: new or changed since ``previous``, or gone from the file since then.

    Without a previous digest (first look), ``stale`` says which days need loading: days not
    yet registered or not materialised since the file last changed.
    """
    if previous is None:
        return sorted(day for day in current if day in stale)
    changed = {day for day, digest in current.items() if previous.get(day) != digest}
    gone = set(previous) - set(current)
    return sorted(changed | gone)


def contiguous_ranges(days: Sequence[str], order: Sequence[str]) -> list[tuple[str, str]]:
    """``days`` as (first, last) ranges of consecutive keys in ``order`` (the partitions' order),
    so a run over a range loads those days and no other."""
    position = {key: i for i, key in enumerate(order)}
    ranges: list[tuple[str, str]] = []
    previous = None
    for day in sorted(days, key=position.__getitem__):
        if previous is not None and position[day] == position[previous] + 1:
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
        previous = day
    return ranges


def load_cursor(text: str | None) -> dict:
    """The stored cursor; a cursor of the old format (a bare stamp) counts as none."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
