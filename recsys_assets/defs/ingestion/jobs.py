"""Jobs of the ingestion domain: load days of events, register the file's days, refresh after."""

from dagster import AssetSelection, OpExecutionContext, define_asset_job, job, op

from recsys_assets.partitions import register_event_days
from recsys_assets.resources import RetailRocketSource

# The days of events are partitions; everything downstream is unpartitioned and rebuilt from the
# whole history once new days have landed.
ingest_job = define_asset_job(
    "ingest_job",
    selection=AssetSelection.assets("raw_events"),
    description="Load days of raw events into DuckDB (one day, or a range as one run).",
)
refresh_job = define_asset_job(
    "refresh_job",
    selection=AssetSelection.groups("interactions", "analytics")
    | AssetSelection.assets("category_tree", "item_property_history", "item_catalog"),
    description="Rebuild interactions, splits, catalog and analytics from the stored events.",
)


@op
def register_days_of_events_file(context: OpExecutionContext, source: RetailRocketSource) -> None:
    """Register every day of the events file as a partition of ``raw_events``."""
    days = register_event_days(context.instance, source)
    context.log.info(f"{len(days)} days registered: {days[0]} .. {days[-1]}")


@job(description="Add the days of events.csv as partitions of raw_events (before materialising).")
def register_event_days_job():
    register_days_of_events_file()
