"""``ui_reports``: what the service's pages show, built from the warehouse and published to Redis.

The service reads only Redis (no DuckDB, Dagster or torch), so the figures, tables and charts of
its Home, Analytics and Experiments pages are computed here, as one JSON document per page plus
PNG charts, and published in one step (``recsys_serving.redis_layout.pages``).
"""

import polars as pl
from dagster import AssetExecutionContext, AssetIn, MetadataValue, asset

from recsys_assets.core.reports.pages import analytics_page, experiments_page, home_page
from recsys_assets.metadata import frame_metadata
from recsys_assets.resources import RedisResource
from recsys_serving.redis_layout.pages import publish_pages

GROUP = "reports"
# Only the columns the figures need: at scale 1.0 raw_events and splits are ~2.7M rows each.
RAW_COLUMNS = ["timestamp", "visitorid", "event", "itemid", "transactionid"]
SPLITS_COLUMNS = ["user_id", "item_id", "timestamp", "session_id", "split"]


@asset(
    group_name=GROUP,
    ins={
        "raw_events": AssetIn(metadata={"columns": RAW_COLUMNS}),  # every event day
        "splits": AssetIn(metadata={"columns": SPLITS_COLUMNS}),
    },
    kinds={"redis", "matplotlib"},
)
def ui_reports(
    context: AssetExecutionContext,
    redis: RedisResource,
    raw_events: pl.DataFrame,
    splits: pl.DataFrame,
    conversion_funnel: pl.DataFrame,
    activity_heatmap: pl.DataFrame,
    rfm_segments: pl.DataFrame,
    association_rules: pl.DataFrame,
    leaderboard: pl.DataFrame,
    ab_test_report: pl.DataFrame,
    ctr_report: pl.DataFrame,
    financial_impact: pl.DataFrame,
    ablation_report: pl.DataFrame,
) -> pl.DataFrame:
    """The Home, Analytics and Experiments pages of the service, published to Redis."""
    home, home_charts = home_page(raw_events, splits)
    analytics, analytics_charts = analytics_page(
        conversion_funnel, activity_heatmap, rfm_segments, association_rules
    )
    experiments, experiment_charts = experiments_page(
        leaderboard, ab_test_report, ctr_report, financial_impact, ablation_report
    )
    charts = {**home_charts, **analytics_charts, **experiment_charts}
    client = redis.reachable_client()
    try:
        report = publish_pages(
            client,
            {"home": home, "analytics": analytics, "experiments": experiments},
            charts,
            prefix=redis.prefix,
        )
    finally:
        client.close()
    context.log.info(
        f"published the pages as publish {report.publish}: {len(charts)} charts, "
        f"{report.payload_bytes / 1024:.0f} KiB"
    )
    table = pl.DataFrame(
        {
            "publish": [report.publish],
            "previous_publish": [report.previous],
            "charts": [len(charts)],
            "payload_bytes": [report.payload_bytes],
            "missing_reports": [", ".join(experiments["missing"])],
            "published_at": [report.published_at],
        }
    )
    context.add_output_metadata(
        frame_metadata(
            table,
            prefix=redis.prefix,
            chart_bytes={name: len(png) for name, png in charts.items()},
            missing_reports=experiments["missing"],
            deleted_publishes=report.deleted,
            pages=MetadataValue.md(
                "Served at `/`, `/analytics`, `/recommendations` and `/experiments` "
                "by the REST service."
            ),
        )
    )
    return table
