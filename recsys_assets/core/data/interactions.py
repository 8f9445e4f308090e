"""From raw events to cleaned, weighted, sessionised interactions.

Rules (documented here because reports and tests depend on them):

* Exact duplicate events are not looked for here: ``read_events`` drops and counts them once,
  when the file is read (the ``raw_events`` metadata reports them).
* Bot / outlier visitors (:class:`BotRule`) are dropped with all their events. Real
  RetailRocket has a handful of visitors with thousands of events that would otherwise
  dominate popularity and co-occurrence counts.
* Each event gets the weight of its type (views < add-to-carts < transactions).
* Sessions: a new session starts at a user's first event and whenever the gap to the user's
  previous event is *strictly greater* than ``session_gap_minutes``; a gap of exactly 30
  minutes stays in the same session. Session ids are dense, global and ordered by (user, time).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from recsys_assets.core.data.schemas import (
    DEFAULT_EVENT_WEIGHTS,
    DEFAULT_SESSION_GAP_MINUTES,
    EVENT_TYPES,
    INTERACTIONS_SCHEMA,
    RAW_EVENTS_SCHEMA,
)

_HOUR_MS = 3_600_000


@dataclass(frozen=True)
class BotRule:
    """A visitor is a bot when it has more than ``max_events_total`` events overall, or more
    than ``max_events_per_hour`` events within any single UTC clock hour."""

    max_events_total: int = 1000
    max_events_per_hour: int = 200


@dataclass
class CleaningReport:
    rows_in: int
    bot_visitors: int
    bot_events_dropped: int
    rows_out: int
    sessions: int
    users: int
    items: int


def bot_visitors(events: pl.DataFrame, rule: BotRule = BotRule()) -> pl.Series:
    """Visitor ids that ``rule`` classes as bots (sorted)."""
    per_hour = (
        events.group_by("visitorid", (pl.col("timestamp") // _HOUR_MS).alias("hour"))
        .len()
        .group_by("visitorid")
        .agg(total=pl.col("len").sum(), peak_hour=pl.col("len").max())
    )
    bots = per_hour.filter(
        (pl.col("total") > rule.max_events_total) | (pl.col("peak_hour") > rule.max_events_per_hour)
    )
    return bots["visitorid"].sort()


def _event_rank() -> pl.Expr:
    # Same-millisecond events of one user: view before add-to-cart before transaction, the
    # order in which a shopper does them, so sessions and sequences read naturally.
    return pl.col("event").replace_strict(
        {e: i for i, e in enumerate(EVENT_TYPES)}, default=len(EVENT_TYPES), return_dtype=pl.Int8
    )


def clean_interactions(
    events: pl.DataFrame,
    weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
    session_gap_minutes: int = DEFAULT_SESSION_GAP_MINUTES,
    bot_rule: BotRule = BotRule(),
) -> tuple[pl.DataFrame, CleaningReport]:
    """Clean raw events (``RAW_EVENTS_SCHEMA``) into ``INTERACTIONS_SCHEMA`` rows.

    Output is sorted by (user_id, timestamp); see the module docstring for the rules.
    """
    missing = [c for c in RAW_EVENTS_SCHEMA if c not in events.columns]
    if missing:
        raise ValueError(
            f"events frame lacks column(s) {missing}; expected {list(RAW_EVENTS_SCHEMA)}"
        )
    if session_gap_minutes <= 0:
        raise ValueError(f"session_gap_minutes must be positive, got {session_gap_minutes}")
    unweighted = set(events["event"].unique().drop_nulls().to_list()) - set(weights)
    if unweighted:
        raise ValueError(
            f"no weight for event type(s) {sorted(unweighted)}; weights: {dict(weights)}"
        )

    rows_in = events.height
    df = events.select(list(RAW_EVENTS_SCHEMA))

    bots = bot_visitors(df, bot_rule)
    before = df.height
    df = df.filter(~pl.col("visitorid").is_in(bots.implode()))
    bot_events = before - df.height

    gap_ms = session_gap_minutes * 60_000
    df = (
        df.rename({"visitorid": "user_id", "itemid": "item_id", "transactionid": "transaction_id"})
        .sort(["user_id", "timestamp", _event_rank(), "item_id"])
        .with_columns(
            weight=pl.col("event").replace_strict(dict(weights), return_dtype=pl.Float32),
            session_id=(
                (pl.col("user_id") != pl.col("user_id").shift(1))
                | (pl.col("timestamp") - pl.col("timestamp").shift(1) > gap_ms)
            )
            .fill_null(True)  # the very first row starts a session
            .cum_sum()
            .cast(pl.Int64)
            - 1,
        )
        .select(list(INTERACTIONS_SCHEMA))
        .cast(INTERACTIONS_SCHEMA)
    )
    report = CleaningReport(
        rows_in=rows_in,
        bot_visitors=bots.len(),
        bot_events_dropped=bot_events,
        rows_out=df.height,
        sessions=int(df["session_id"].max()) + 1 if df.height else 0,
        users=df["user_id"].n_unique(),
        items=df["item_id"].n_unique(),
    )
    return df, report
