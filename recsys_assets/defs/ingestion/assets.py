"""Raw RetailRocket files → DuckDB: events by day, the category tree, the item property history."""

from collections.abc import Sequence

import polars as pl
from dagster import AssetExecutionContext, BackfillPolicy, MetadataValue, asset

from recsys_assets.core.data import catalog as catalog_core
from recsys_assets.core.data import retailrocket
from recsys_assets.core.data.schemas import PROPERTY_AVAILABLE, PROPERTY_CATEGORY, PROPERTY_PRICE
from recsys_assets.metadata import frame_metadata
from recsys_assets.partitions import event_days
from recsys_assets.resources import RetailRocketSource

GROUP = "ingestion"

# The DuckDB IO manager deletes and rewrites the rows `WHERE <expr> IN (<partition keys>)`. The
# UTC date of the Unix-ms timestamp compares equal to a 'YYYY-MM-DD' key, and needs no extra
# column (a date cast is ~30x cheaper than formatting the date as text).
DAY_PARTITION_EXPR = 'cast(epoch_ms("timestamp") as date)'


@asset(
    group_name=GROUP,
    partitions_def=event_days,
    # A backfill of every day is one run: the CSV is read once, not once per day.
    backfill_policy=BackfillPolicy.single_run(),
    # the IO manager deletes and rewrites exactly the days being materialised
    metadata={"partition_expr": DAY_PARTITION_EXPR},
    kinds={"duckdb", "polars"},
)
def raw_events(context: AssetExecutionContext, source: RetailRocketSource) -> pl.DataFrame:
    """RetailRocket ``events.csv`` rows of the materialised days, validated and de-duplicated.

    The days are the file's own (registered by ``recsys_assets.partitions.register_event_days``).
    The file is validated whole before anything is written, so a bad file leaves every stored day
    untouched. Rows on days outside this run are not loaded, and the metadata (and a warning)
    says how many.
    """
    events, report = retailrocket.read_events(source.events_path)
    days = context.partition_keys
    kept = events.filter(retailrocket.event_day().is_in(days))
    outside = events.height - kept.height
    if outside:
        context.log.warning(
            f"{outside:,} rows of {source.events_path} fall on days outside this run "
            f"({days[0]} .. {days[-1]}, {len(days)} days) and were not loaded; "
            "materialise every day of the file (the main job does) to load them"
        )
    context.add_output_metadata(
        frame_metadata(
            kept,
            **load_report(kept, report, outside, days),
            file=str(source.events_path),
        )
    )
    return kept


def load_report(
    kept: pl.DataFrame,
    report: retailrocket.ReadReport,
    outside: int,
    days: Sequence[str],
) -> dict:
    """How many rows of the file were loaded, how many were not and why."""
    counts = kept.group_by("event").len().sort("event")
    loaded_days = set(kept.select(retailrocket.event_day().unique())["timestamp"])
    return {
        "file_rows": report.rows_read,
        "rows_loaded": kept.height,
        "rows_not_loaded": report.duplicates_dropped + outside,
        "not_loaded_duplicates": report.duplicates_dropped,
        "not_loaded_outside_materialised_days": outside,
        "events_by_type": dict(zip(counts["event"], counts["len"], strict=True)),
        "partitions": len(days),
        "first_day": days[0] if days else None,
        "last_day": days[-1] if days else None,
        # registered days with no row in the current file: their stored rows are cleared
        "days_without_events": sum(day not in loaded_days for day in days),
    }


@asset(group_name=GROUP, kinds={"duckdb", "polars"})
def category_tree(context: AssetExecutionContext, source: RetailRocketSource) -> pl.DataFrame:
    """``category_tree.csv`` with each category's depth, root and ancestor path."""
    tree, report = retailrocket.read_category_tree(source.category_tree_path)
    table = catalog_core.category_tree_table(tree)
    depth = table.group_by("depth").len().sort("depth")
    context.add_output_metadata(
        frame_metadata(
            table,
            duplicates_dropped=report.duplicates_dropped,
            roots=int(table["parent_id"].null_count()),
            categories_by_depth={str(d): int(n) for d, n in depth.iter_rows()},
        )
    )
    return table


@asset(group_name=GROUP, kinds={"duckdb", "polars"})
def item_property_history(
    context: AssetExecutionContext, source: RetailRocketSource
) -> pl.DataFrame:
    """Category, price (property 790) and availability of every item over time.

    Only changes are kept, so a value "in force at time t" is the last row at or before t.
    Hashed properties are not interpreted yet; nothing downstream reads them.
    """
    props, reports = retailrocket.read_item_properties(
        source.properties_paths,
        properties=(PROPERTY_CATEGORY, PROPERTY_AVAILABLE, PROPERTY_PRICE),
    )
    history = catalog_core.property_history(props)
    per_prop = history.group_by("property").len().sort("property")
    context.add_output_metadata(
        frame_metadata(
            history,
            rows_read={r.file: r.rows_read for r in reports},
            duplicates_dropped=sum(r.duplicates_dropped for r in reports),
            items=int(history["item_id"].n_unique()),
            changes_by_property=dict(zip(per_prop["property"], per_prop["len"], strict=True)),
        )
    )
    return history


@asset(group_name=GROUP, kinds={"duckdb", "polars"})
def item_catalog(
    context: AssetExecutionContext,
    item_property_history: pl.DataFrame,
    category_tree: pl.DataFrame,
    splits: pl.DataFrame,
) -> pl.DataFrame:
    """One row per item: category, price and availability as known when the test period starts.

    Models train on train+valid and are scored on test, so anything later would be peeking.
    """
    as_of_ms = int(splits.filter(pl.col("split") == "test")["timestamp"].min())
    item_ids = pl.concat(
        [splits["item_id"].unique(), item_property_history["item_id"].unique()]
    ).unique()
    catalog = catalog_core.item_catalog(item_property_history, category_tree, as_of_ms, item_ids)
    context.add_output_metadata(
        frame_metadata(
            catalog,
            as_of=MetadataValue.timestamp(as_of_ms / 1000),
            items_with_category=int(catalog["category_id"].is_not_null().sum()),
            items_with_price=int(catalog["price"].is_not_null().sum()),
            items_available=int((catalog["available"] == 1).sum()),
        )
    )
    return catalog
