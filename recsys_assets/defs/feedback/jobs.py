"""Jobs of the feedback domain: consume the stream, then rebuild the online A/B report."""

from dagster import AssetSelection, define_asset_job

feedback_job = define_asset_job(
    "feedback_job",
    selection=AssetSelection.assets("feedback_events", "online_ab_report"),
    description="Consume new feedback from Redis and rebuild online_ab_report.",
)
