"""Jobs, schedules and sensors that keep the graph fresh when the Dagster daemon runs."""

from dagster import (
    AssetKey,
    AssetSelection,
    DefaultSensorStatus,
    OpExecutionContext,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset_sensor,
    define_asset_job,
    job,
    op,
    sensor,
)
from dagster_mlflow import end_mlflow_on_run_finished

from recsys_assets.assets.ingestion import register_event_days
from recsys_assets.partitions import event_days, partition_range_tags
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

models_job = define_asset_job(
    "models_job",
    selection=AssetSelection.assets(
        "tuned_params", "trained_model", "eval_recommendations", "model_metrics"
    ),
    hooks={end_mlflow_on_run_finished},
    description="Tune, train, list and score one model (one partition per model).",
)
leaderboard_job = define_asset_job(
    "leaderboard_job",
    selection=AssetSelection.assets("session_metrics", "leaderboard"),
    hooks={end_mlflow_on_run_finished},
)


@op
def register_days_of_events_file(context: OpExecutionContext, source: RetailRocketSource) -> None:
    """Register every day of the events file as a partition of ``raw_events``."""
    days = register_event_days(context.instance, source)
    context.log.info(f"{len(days)} days registered: {days[0]} .. {days[-1]}")


@job(description="Add the days of events.csv as partitions of raw_events (before materialising).")
def register_event_days_job():
    register_days_of_events_file()


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

    days = days_of(path)
    known = set(context.instance.get_dynamic_partitions(event_days.name))
    new = [day for day in days if day not in known]
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


jobs = [ingest_job, refresh_job, models_job, leaderboard_job, register_event_days_job]
schedules = []
sensors = [events_file_sensor, refresh_after_ingest]
