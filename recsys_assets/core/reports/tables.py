"""A table for a web page: columns with labels and a display format, rows as plain dicts.

The service renders any such table with one template macro, so a new column is a change here
only. Formats: ``int``, ``float`` (4 decimals), ``pct``, ``ratio``, ``money``, ``p`` (p-value),
``seconds``, ``bool``, ``text``.
"""

from __future__ import annotations

import math

import polars as pl

FORMATS = {"int", "float", "pct", "ratio", "money", "p", "seconds", "bool", "text"}


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return value


def page_table(
    frame: pl.DataFrame,
    columns: list[tuple[str, str, str]],
    row_key: str | None = None,
    *,
    optional: bool = False,
) -> dict:
    """``{"columns": [{key, label, format}], "rows": [{key: value}], "row_key": ...}``.

    ``columns`` are ``(column, label, format)``; with ``optional`` a column the frame lacks is
    left out (a report from an older graph), otherwise it is a clear error.
    """
    for _, _, fmt in columns:
        if fmt not in FORMATS:
            raise ValueError(f"page table: unknown format {fmt!r} (known: {sorted(FORMATS)})")
    present = [c for c in columns if c[0] in frame.columns]
    missing = [c[0] for c in columns if c[0] not in frame.columns]
    if missing and not optional:
        raise ValueError(f"page table: missing column(s) {missing}; present: {frame.columns}")
    keys = [c[0] for c in present]
    rows = [
        {k: _plain(v) for k, v in row.items()} for row in frame.select(keys).iter_rows(named=True)
    ]
    return {
        "columns": [{"key": k, "label": label, "format": fmt} for k, label, fmt in present],
        "rows": rows,
        "row_key": row_key,
    }
