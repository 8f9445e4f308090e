"""Cleaned interactions and the temporal train/valid/test split."""

import polars as pl
from dagster import AssetExecutionContext, Config, MetadataValue, asset

from recsys_assets.core.data import interactions as interactions_core
from recsys_assets.core.data import splits as splits_core
from recsys_assets.core.data.schemas import DEFAULT_EVENT_WEIGHTS, DEFAULT_SESSION_GAP_MINUTES
from recsys_assets.metadata import frame_metadata

GROUP = "interactions"


class InteractionsConfig(Config):
    """Cleaning knobs; the defaults are documented in README "Cleaning rules"."""

    view_weight: float = DEFAULT_EVENT_WEIGHTS["view"]
    addtocart_weight: float = DEFAULT_EVENT_WEIGHTS["addtocart"]
    transaction_weight: float = DEFAULT_EVENT_WEIGHTS["transaction"]
    session_gap_minutes: int = DEFAULT_SESSION_GAP_MINUTES
    bot_max_events_total: int = interactions_core.BotRule().max_events_total
    bot_max_events_per_hour: int = interactions_core.BotRule().max_events_per_hour


@asset(group_name=GROUP, kinds={"duckdb", "polars"})
def interactions(
    context: AssetExecutionContext, config: InteractionsConfig, raw_events: pl.DataFrame
) -> pl.DataFrame:
    """Events with bots removed, event weights and 30-minute sessions (duplicates: raw_events)."""
    cleaned, report = interactions_core.clean_interactions(
        raw_events,
        weights={
            "view": config.view_weight,
            "addtocart": config.addtocart_weight,
            "transaction": config.transaction_weight,
        },
        session_gap_minutes=config.session_gap_minutes,
        bot_rule=interactions_core.BotRule(
            max_events_total=config.bot_max_events_total,
            max_events_per_hour=config.bot_max_events_per_hour,
        ),
    )
    context.add_output_metadata(
        frame_metadata(
            cleaned,
            rows_in=report.rows_in,
            bot_visitors=report.bot_visitors,
            bot_events_dropped=report.bot_events_dropped,
            users=report.users,
            items=report.items,
            sessions=report.sessions,
        )
    )
    return cleaned


@asset(group_name=GROUP, kinds={"duckdb", "polars"})
def splits(context: AssetExecutionContext, interactions: pl.DataFrame) -> pl.DataFrame:
    """Temporal 70/10/20 split by event time (``recsys.splits``, read by outside checks)."""
    table, report = splits_core.temporal_split(interactions, fractions=(0.7, 0.1, 0.2))
    context.add_output_metadata(
        frame_metadata(
            table,
            rows_per_split=report.counts,
            users_per_split=report.users,
            items_per_split=report.items,
            users_in_train_and_test=report.users_train_and_test,
            valid_starts=MetadataValue.timestamp(report.cutoffs_ms[0] / 1000),
            test_starts=MetadataValue.timestamp(report.cutoffs_ms[1] / 1000),
        )
    )
    return table
