"""Sensors of the ingestion domain (started from the UI, run by the daemon)."""

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset_sensor,
    sensor,
)

from recsys_assets.defs.ingestion.jobs import ingest_job, refresh_job
from recsys_assets.partitions import event_days, partition_range_tags, unregistered_days
from recsys_assets.resources import RetailRocketSource


@sensor(
    job=ingest_job,
    default_status=DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=300,
)
def events_file_sensor(context: SensorEvaluationContext, source: RetailRocketSource):
    """When events.csv changes, register its new days and load every day in one run."""
    path = source.events_path
    stat = path.stat()
    stamp = f"{stat.st_mtime_ns}:{stat.st_size}"
    if context.cursor == stamp:
        return SkipReason(f"{path} unchanged")
    from recsys_assets.core.data.retailrocket import event_days as days_of

    new = unregistered_days(context.instance, days_of(path))
    registered = [*context.instance.get_dynamic_partitions(event_days.name), *new]
    return SensorResult(
        dynamic_partitions_requests=[event_days.build_add_request(new)] if new else [],
        run_requests=[
            RunRequest(run_key=stamp, tags=partition_range_tags(registered[0], registered[-1]))
        ],
        cursor=stamp,
    )


@asset_sensor(
    asset_key=AssetKey("raw_events"),
    job=refresh_job,
    default_status=DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=300,
)
def refresh_after_ingest(context: SensorEvaluationContext, asset_event):
    """When days of events land, rebuild what depends on them (one run per landing)."""
    yield RunRequest(run_key=asset_event.run_id)
