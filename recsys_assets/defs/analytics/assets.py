"""Analytics over cleaned interactions: funnel, heat-map, RFM segments, association rules."""

import time

import polars as pl
from dagster import AssetExecutionContext, Config, MetadataValue, asset

from recsys_assets.core.analytics import funnel, heatmap, plots, rfm, rules
from recsys_assets.metadata import frame_metadata, markdown_table

GROUP = "analytics"


@asset(group_name=GROUP, kinds={"duckdb", "polars"})
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


@asset(group_name=GROUP, kinds={"duckdb", "polars"})
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


@asset(group_name=GROUP, kinds={"duckdb", "polars"})
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
    min_support: float = 0.002  # raised automatically when the search would not be bounded
    min_confidence: float = 0.1
    min_lift: float = 1.5
    min_item_count: int = 5
    max_items: int = 2000
    # The search bound (recsys_assets/core/analytics/rules_bound.py), decided before mlxtend
    # runs; what it did is in the `search_bound` metadata.
    max_len: int = rules.DEFAULT_MAX_LEN
    max_basket_items: int = rules.DEFAULT_MAX_BASKET_ITEMS
    max_candidates: int = rules.DEFAULT_MAX_CANDIDATES
    max_candidate_checks: int = rules.DEFAULT_MAX_CANDIDATE_CHECKS
    max_basket_subsets: int = rules.DEFAULT_MAX_BASKET_SUBSETS
    session_events: list[str] = ["addtocart", "transaction"]


@asset(group_name=GROUP, kinds={"duckdb", "polars", "mlxtend"})
def association_rules(
    context: AssetExecutionContext, config: RulesConfig, interactions: pl.DataFrame
) -> pl.DataFrame:
    """Apriori and FP-Growth rules on transaction baskets and on session baskets.

    The search is bounded before mlxtend runs (itemset length, basket cap, min_support raised
    until the candidates fit); both algorithms mine the same bounded baskets.
    """
    rules.check_rule_arguments(
        "fpgrowth",
        config.min_support,
        config.min_confidence,
        config.min_item_count,
        config.max_items,
    )
    baskets = {
        "transaction": rules.transaction_baskets(interactions),
        "session": rules.session_baskets(interactions, events=tuple(config.session_events)),
    }
    tables, seconds, bounds = [], {}, {}
    for basket_type, frame in baskets.items():
        start = time.perf_counter()
        pruned = rules.prune_baskets(
            frame,
            min_item_count=config.min_item_count,
            max_items=config.max_items,
            min_support=config.min_support,
            max_len=config.max_len,
            max_basket_items=config.max_basket_items,
            max_candidates=config.max_candidates,
            max_candidate_checks=config.max_candidate_checks,
            max_basket_subsets=config.max_basket_subsets,
        )
        seconds[f"{basket_type}/bound"] = round(time.perf_counter() - start, 3)
        bounds[basket_type] = pruned.bound.as_metadata()
        if pruned.bound.raised:
            context.log.warning(
                f"association_rules: {basket_type} baskets: min_support raised from "
                f"{config.min_support} to {pruned.bound.min_support_effective:.4g} to bound "
                f"the search ({pruned.bound.baskets_capped} baskets capped at "
                f"{config.max_basket_items} items)"
            )
        for algorithm in ("apriori", "fpgrowth"):
            start = time.perf_counter()
            found = rules.mine_rules(
                pruned,
                algorithm=algorithm,
                min_confidence=config.min_confidence,
                min_lift=config.min_lift,
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
            search_bound=bounds,
            min_support_effective={k: b["min_support_effective"] for k, b in bounds.items()},
            top_rules_by_lift=MetadataValue.md(markdown_table(top, max_rows=15)),
        )
    )
    return table
