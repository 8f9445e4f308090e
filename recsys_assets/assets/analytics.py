"""Analytics over cleaned interactions: funnel, heat-map, RFM segments, association rules."""

import time

import polars as pl
from dagster import AssetExecutionContext, Config, MetadataValue, asset

from recsys_assets.core import plots
from recsys_assets.core.analytics import funnel, heatmap, rfm, rules
from recsys_assets.settings import DUCKDB_POOL

from .metadata import frame_metadata, markdown_table

GROUP = "analytics"


@asset(group_name=GROUP, pool=DUCKDB_POOL, kinds={"duckdb", "polars"})
def conversion_funnel(
    context: AssetExecutionContext, interactions: pl.DataFrame, item_catalog: pl.DataFrame
) -> pl.DataFrame:
    """View → add-to-cart → transaction, overall, by day and by top categories."""
    table = funnel.conversion_funnel(interactions, item_catalog, top_categories=10)
    overall = table.filter(pl.col("scope") == "overall")
    context.add_output_metadata(
        frame_metadata(
            table,
            overall=MetadataValue.md(markdown_table(overall)),
            funnel_plot=MetadataValue.md(
                plots.figure_to_markdown(plots.plot_funnel(table), "Conversion funnel")
            ),
        )
    )
    return table


@asset(group_name=GROUP, pool=DUCKDB_POOL, kinds={"duckdb", "polars"})
def activity_heatmap(context: AssetExecutionContext, interactions: pl.DataFrame) -> pl.DataFrame:
    """Events per weekday × hour (UTC)."""
    table = heatmap.activity_heatmap(interactions)
    busiest = table.sort("events", descending=True).head(5)
    context.add_output_metadata(
        frame_metadata(
            table,
            busiest_cells=MetadataValue.md(markdown_table(busiest)),
            heatmap_plot=MetadataValue.md(
                plots.figure_to_markdown(
                    plots.plot_heatmap(table), "Events by weekday and hour (UTC)"
                )
            ),
        )
    )
    return table


@asset(group_name=GROUP, pool=DUCKDB_POOL, kinds={"duckdb", "polars"})
def rfm_segments(
    context: AssetExecutionContext,
    interactions: pl.DataFrame,
    item_property_history: pl.DataFrame,
) -> pl.DataFrame:
    """Recency / frequency / monetary quintiles and named segments for every buyer."""
    table = rfm.rfm_segments(interactions, item_property_history)
    summary = rfm.rfm_segment_summary(table)
    context.add_output_metadata(
        frame_metadata(
            table,
            segments=MetadataValue.md(markdown_table(summary, max_rows=20)),
            segment_plot=MetadataValue.md(
                plots.figure_to_markdown(plots.plot_rfm_segments(summary), "RFM segments")
            ),
            monetary_known_share=float(table["monetary_known_share"].mean() or 0.0),
        )
    )
    return table


class RulesConfig(Config):
    min_support: float = 0.002
    min_confidence: float = 0.1
    min_lift: float = 1.5
    min_item_count: int = 5
    max_items: int = 2000
    max_len: int = 3
    session_events: list[str] = ["addtocart", "transaction"]


@asset(group_name=GROUP, pool=DUCKDB_POOL, kinds={"duckdb", "polars", "mlxtend"})
def association_rules(
    context: AssetExecutionContext, config: RulesConfig, interactions: pl.DataFrame
) -> pl.DataFrame:
    """Apriori and FP-Growth rules on transaction baskets and on session baskets."""
    baskets = {
        "transaction": rules.transaction_baskets(interactions),
        "session": rules.session_baskets(interactions, events=tuple(config.session_events)),
    }
    tables, seconds = [], {}
    for basket_type, frame in baskets.items():
        for algorithm in ("apriori", "fpgrowth"):
            start = time.perf_counter()
            found = rules.association_rules(
                frame,
                algorithm=algorithm,
                min_support=config.min_support,
                min_confidence=config.min_confidence,
                min_lift=config.min_lift,
                min_item_count=config.min_item_count,
                max_items=config.max_items,
                max_len=config.max_len,
            )
            seconds[f"{basket_type}/{algorithm}"] = round(time.perf_counter() - start, 3)
            tables.append(found.with_columns(pl.lit(basket_type).alias("basket_type")))
    table = pl.concat(tables, how="diagonal_relaxed").sort(
        ["basket_type", "algorithm", "lift"], descending=[False, False, True]
    )
    top = table.filter(pl.col("algorithm") == "fpgrowth").sort("lift", descending=True)
    context.add_output_metadata(
        frame_metadata(
            table,
            baskets={k: int(v["basket_id"].n_unique()) for k, v in baskets.items()},
            rules_found={
                f"{b}/{a}": int(n)
                for b, a, n in table.group_by("basket_type", "algorithm").len().iter_rows()
            },
            seconds=seconds,
            top_rules_by_lift=MetadataValue.md(markdown_table(top, max_rows=15)),
        )
    )
    return table
