"""``ctr_report``: offline CTR, add-to-cart and purchase rates of the shown top-K lists."""

import polars as pl
from dagster import AssetExecutionContext, Config, MetadataValue, asset

from recsys_assets.core.analytics.plots import figure_to_markdown
from recsys_assets.core.experiments.ctr import ctr_table, pre_test_segments
from recsys_assets.core.experiments.plots import plot_ctr_by_position
from recsys_assets.defs.experiments._inputs import (
    ALL_MODEL_LISTS,
    GROUP,
    SPLITS,
    check_list_positions,
)
from recsys_assets.metadata import frame_metadata, markdown_table

RATE_COLUMNS = ["model", "key", "users", "shown", "ctr", "cart_rate", "purchase_rate"]


class CTRConfig(Config):
    k: int = 10  # list positions shown to a user


@asset(
    group_name=GROUP,
    ins={"eval_recommendations": ALL_MODEL_LISTS, "splits": SPLITS},
    kinds={"duckdb", "polars"},
)
def ctr_report(
    context: AssetExecutionContext,
    config: CTRConfig,
    eval_recommendations: pl.DataFrame,
    splits: pl.DataFrame,
    item_catalog: pl.DataFrame,
    item_property_history: pl.DataFrame,
) -> pl.DataFrame:
    """Share of shown recommendations then viewed / carted / bought in the test period, per
    model, overall and by position, root category and RFM segment (``breakdown`` column)."""
    check_list_positions(config.k)
    segments = pre_test_segments(splits, item_property_history)
    table = ctr_table(eval_recommendations, splits, item_catalog, segments, k=config.k)

    def part(breakdown: str) -> pl.DataFrame:
        return table.filter(pl.col("breakdown") == breakdown).select(RATE_COLUMNS)

    overall = part("overall").drop("key").sort("ctr", descending=True)
    context.add_output_metadata(
        frame_metadata(
            table,
            k=config.k,
            overall=MetadataValue.md(markdown_table(overall, max_rows=20)),
            by_position=MetadataValue.md(markdown_table(part("position"), max_rows=200)),
            by_rfm_segment=MetadataValue.md(markdown_table(part("rfm_segment"), max_rows=200)),
            by_category=MetadataValue.md(
                markdown_table(part("category").sort("shown", descending=True), max_rows=40)
            ),
            ctr_by_position_plot=MetadataValue.md(
                figure_to_markdown(plot_ctr_by_position(table), "CTR by position")
            ),
        )
    )
    return table
