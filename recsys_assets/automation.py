"""Jobs, schedules and sensors that keep the graph fresh when the Dagster daemon runs."""

from dagster import (
    AssetKey,
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    asset_sensor,
    build_schedule_from_partitioned_job,
    define_asset_job,
)
from dagster_mlflow import end_mlflow_on_run_finished

# New days of events arrive per partition; everything downstream is unpartitioned and rebuilt
# from the whole history once the day has landed.
ingest_job = define_asset_job(
    "ingest_job",
    selection=AssetSelection.assets("raw_events"),
    description="Load one day (or a range, as one run) of raw events into DuckDB.",
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

daily_ingest_schedule = build_schedule_from_partitioned_job(
    ingest_job,
    hour_of_day=1,
    default_status=DefaultScheduleStatus.STOPPED,
)


@asset_sensor(
    asset_key=AssetKey("raw_events"),
    job=refresh_job,
    default_status=DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=300,
)
def refresh_after_ingest(context: SensorEvaluationContext, asset_event):
    """When a day of events lands, rebuild what depends on it (one run per landing)."""
    yield RunRequest(run_key=asset_event.run_id)


jobs = [ingest_job, refresh_job, models_job, leaderboard_job]
schedules = [daily_ingest_schedule]
sensors = [refresh_after_ingest]
