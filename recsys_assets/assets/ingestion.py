"""Raw RetailRocket files → DuckDB: events by day, the category tree, the item property history."""

import polars as pl
from dagster import AssetExecutionContext, BackfillPolicy, MetadataValue, asset

from recsys_assets.core import catalog as catalog_core
from recsys_assets.core import retailrocket
from recsys_assets.core.schemas import PROPERTY_AVAILABLE, PROPERTY_CATEGORY, PROPERTY_PRICE
from recsys_assets.partitions import daily_partitions
from recsys_assets.resources import RetailRocketSource
from recsys_assets.settings import DUCKDB_POOL

from .metadata import frame_metadata

GROUP = "ingestion"


@asset(
    group_name=GROUP,
    partitions_def=daily_partitions,
    # A backfill of every day is one run: the CSV is read once, not once per day.
    backfill_policy=BackfillPolicy.single_run(),
    pool=DUCKDB_POOL,
    # Rows are bound to a day through the Unix-ms timestamp; the IO manager deletes and rewrites
    # exactly the days being materialised.
    metadata={"partition_expr": 'epoch_ms("timestamp")'},
    kinds={"duckdb", "polars"},
)
def raw_events(context: AssetExecutionContext, source: RetailRocketSource) -> pl.DataFrame:
    """RetailRocket ``events.csv`` rows of the materialised days, validated and de-duplicated.

    The file is validated whole before anything is written, so a bad file leaves every stored
    day untouched.
    """
    events, report = retailrocket.read_events(source.events_path)
    window = context.partition_time_window
    start_ms = int(window.start.timestamp() * 1000)
    end_ms = int(window.end.timestamp() * 1000)
    days = events.filter(pl.col("timestamp").is_between(start_ms, end_ms, closed="left"))
    counts = days.group_by("event").len().sort("event")
    context.add_output_metadata(
        frame_metadata(
            days,
            file=str(source.events_path),
            file_rows=report.rows_read,
            duplicates_dropped=report.duplicates_dropped,
            events_by_type=dict(zip(counts["event"], counts["len"], strict=True)),
            partitions=len(context.partition_keys),
        )
    )
    return days


@asset(group_name=GROUP, pool=DUCKDB_POOL, kinds={"duckdb", "polars"})
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


@asset(group_name=GROUP, pool=DUCKDB_POOL, kinds={"duckdb", "polars"})
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


@asset(group_name=GROUP, pool=DUCKDB_POOL, kinds={"duckdb", "polars"})
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
