"""Metadata helpers shared by the assets: row counts, markdown previews, plots."""

from __future__ import annotations

from typing import Any

import polars as pl
from dagster import MetadataValue


def markdown_table(df: pl.DataFrame, max_rows: int = 10, float_digits: int = 4) -> str:
    """A small markdown table (the Dagster UI renders it); lists and floats kept short."""
    head = df.head(max_rows)
    cells = []
    for row in head.iter_rows():
        out = []
        for v in row:
            if isinstance(v, float):
                out.append(f"{v:.{float_digits}g}")
            elif isinstance(v, list):
                out.append(", ".join(map(str, v[:6])) + (" …" if len(v) > 6 else ""))
            else:
                out.append("" if v is None else str(v))
        cells.append("| " + " | ".join(out) + " |")
    header = "| " + " | ".join(head.columns) + " |"
    rule = "|" + "---|" * len(head.columns)
    more = f"\n\n_{df.height - head.height:,} more rows_" if df.height > head.height else ""
    return "\n".join([header, rule, *cells]) + more


def frame_metadata(df: pl.DataFrame, preview_rows: int = 10, **extra: Any) -> dict[str, Any]:
    """Row count, column list and a preview — attached to every table asset."""
    md: dict[str, Any] = {
        "dagster/row_count": MetadataValue.int(df.height),
        "columns": MetadataValue.text(", ".join(f"{c}: {t}" for c, t in df.schema.items())),
        "preview": MetadataValue.md(markdown_table(df, preview_rows)),
    }
    for key, value in extra.items():
        md[key] = _coerce(value)
    return md


def _coerce(value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict | list):
        return MetadataValue.json(value)
    return MetadataValue.text(str(value))
