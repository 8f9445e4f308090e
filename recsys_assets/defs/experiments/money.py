"""``financial_impact``: revenue of recommended items then bought, and the increment over
Popularity scaled to a month of traffic, with every assumption in the metadata and the table."""

import polars as pl
from dagster import AssetExecutionContext, Config, MetadataValue, asset

from recsys_assets.core.analytics.plots import figure_to_markdown
from recsys_assets.core.experiments.plots import plot_revenue
from recsys_assets.core.experiments.revenue import MoneySettings
from recsys_assets.core.experiments.revenue import financial_impact as impact
from recsys_assets.defs.experiments._inputs import (
    ALL_MODEL_LISTS,
    GROUP,
    SPLITS,
    check_list_positions,
)
from recsys_assets.metadata import frame_metadata, markdown_table

SUMMARY_COLUMNS = [
    "model",
    "buyers",
    "attributed_purchases",
    "revenue_per_1000_users",
    "revenue_per_1000_users_ci_low",
    "revenue_per_1000_users_ci_high",
    "incremental_per_1000_users",
    "monthly_incremental_revenue",
    "monthly_incremental_revenue_ci_low",
    "monthly_incremental_revenue_ci_high",
]


class FinancialConfig(Config):
    k: int = 10
    attribution_window_days: float | None = None  # None: the whole test period
    monthly_users: int = 100_000
    exposed_share: float = 1.0
    baseline: str = "popular"
    n_bootstrap: int = 2000
    confidence: float = 0.95
    seed: int = 0


@asset(
    group_name=GROUP,
    ins={"eval_recommendations": ALL_MODEL_LISTS, "splits": SPLITS},
    kinds={"duckdb", "polars"},
)
def financial_impact(
    context: AssetExecutionContext,
    config: FinancialConfig,
    eval_recommendations: pl.DataFrame,
    splits: pl.DataFrame,
    item_property_history: pl.DataFrame,
) -> pl.DataFrame:
    """Attributed revenue per 1,000 users per model and the monthly increment over the
    baseline, with paired bootstrap intervals (``recsys.financial_impact``)."""
    check_list_positions(config.k)
    settings = MoneySettings(**config.model_dump())
    table, assumptions = impact(eval_recommendations, splits, item_property_history, settings)
    lines = "\n".join(f"- **{k}**: {v}" for k, v in assumptions.items())
    context.add_output_metadata(
        frame_metadata(
            table,
            results=MetadataValue.md(markdown_table(table.select(SUMMARY_COLUMNS), max_rows=20)),
            assumptions=MetadataValue.json(assumptions),
            assumptions_text=MetadataValue.md(lines),
            revenue_plot=MetadataValue.md(
                figure_to_markdown(plot_revenue(table), "Revenue per 1,000 users")
            ),
        )
    )
    return table
