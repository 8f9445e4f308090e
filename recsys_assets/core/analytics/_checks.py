"""Input checks shared by the analytics functions.

Analytics run on tables other code produced, so a wrong column or an unknown event type is
reported with the table, the column and the first offending row instead of surfacing later as
a confusing polars error or a silently wrong number.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from recsys_assets.core.data.schemas import EVENT_TYPES


def require_columns(frame: pl.DataFrame, columns: Iterable[str], table: str) -> None:
    """Raise ``ValueError`` naming ``table`` and every missing column."""
    if not isinstance(frame, pl.DataFrame):
        raise TypeError(f"{table}: expected a polars DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{table}: missing column(s) {missing}; columns present: {frame.columns}")


def require_no_nulls(frame: pl.DataFrame, columns: Iterable[str], table: str) -> None:
    """Raise ``ValueError`` naming the first row where one of ``columns`` is null."""
    for column in columns:
        nulls = frame.get_column(column).is_null()
        if nulls.any():
            row = int(nulls.arg_true()[0])
            raise ValueError(f"{table}: null {column!r} at row {row}")


def require_known_events(frame: pl.DataFrame, table: str, column: str = "event") -> None:
    """Raise ``ValueError`` naming the first row whose event is not one of EVENT_TYPES."""
    bad = ~frame.get_column(column).is_in(list(EVENT_TYPES))
    if bad.any():
        row = int(bad.arg_true()[0])
        value = frame.get_column(column)[row]
        raise ValueError(
            f"{table}: unknown {column!r} value {value!r} at row {row}; expected one of "
            f"{list(EVENT_TYPES)}"
        )


def check_interactions(interactions: pl.DataFrame, columns: Iterable[str]) -> None:
    """Columns present, no nulls in them (except ``transaction_id``), known event names."""
    columns = list(columns)
    require_columns(interactions, columns, "interactions")
    require_no_nulls(interactions, [c for c in columns if c != "transaction_id"], "interactions")
    if "event" in columns:
        require_known_events(interactions, "interactions")
