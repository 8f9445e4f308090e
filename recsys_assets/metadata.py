"""Metadata helpers shared by the assets: row counts, markdown previews, plots."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
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
    """A value Dagster stores with its type, so the UI can render it (tables, images, times).

    ``MetadataValue``s pass through unchanged: they are tuples underneath, and turning them into
    text made every plot and markdown table show up as ``MarkdownMetadataValue(md_str=…)``.
    """
    if isinstance(value, MetadataValue):
        return value
    if value is None:
        return MetadataValue.null()
    if isinstance(value, np.generic):  # numpy scalars from polars/numpy reductions
        value = value.item()
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict | list | tuple):
        return MetadataValue.json(_jsonable(value))
    if isinstance(value, pl.DataFrame):
        return MetadataValue.md(markdown_table(value))
    if isinstance(value, Path):
        return MetadataValue.path(str(value))
    if isinstance(value, datetime):
        return MetadataValue.timestamp(value)
    raise TypeError(
        f"metadata value of type {type(value).__name__} has no Dagster rendering; "
        "pass a MetadataValue or a str/int/float/bool/dict/list/Path/datetime/polars.DataFrame"
    )


def _jsonable(value: Any) -> Any:
    """Numpy scalars inside dicts/lists become Python numbers (JSON has no int64)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
