"""``feedback_events`` (the stream, consumed once) and ``online_ab_report`` (CTR per arm and day).

Why one appended table rather than daily partitions: which days a batch of feedback covers is
known only after reading the stream, and a past day cannot be re-materialised from Redis (the
stream is trimmed to ``RECSYS_FEEDBACK_MAXLEN`` entries). So each materialisation appends the
entries after the stored offset, with the feedback's own ``day`` (UTC date of its timestamp) as
a column, and the report groups by that day.
"""

import polars as pl
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from dagster_duckdb import DuckDBResource

from recsys_assets.core.experiments.online import ALL_DAYS, FEEDBACK_SCHEMA, online_ab_table
from recsys_assets.defs.feedback.consume import consume_feedback, ensure_tables
from recsys_assets.metadata import frame_metadata, markdown_table
from recsys_assets.resources import RedisResource
from recsys_assets.settings import DUCKDB_POOL, DUCKDB_SCHEMA
from recsys_serving.redis_layout.keys import Keys

GROUP = "feedback"


class FeedbackConfig(Config):
    max_entries: int = 1_000_000  # per run; the rest is read by the next run


# Feedback is what the service's users did with the published lists: downstream of the bundle in
# lineage, so the main job consumes it after publishing (the sensor does between publishes).
@asset(group_name=GROUP, pool=DUCKDB_POOL, deps=["serving_bundle"], kinds={"redis", "duckdb"})
def feedback_events(
    context: AssetExecutionContext,
    config: FeedbackConfig,
    redis: RedisResource,
    warehouse: DuckDBResource,
) -> MaterializeResult:
    """Feedback posted to the service (``{prefix}:feedback`` stream) appended to
    ``recsys.feedback_events``, each stream entry once: the last consumed id is stored in
    ``recsys.feedback_offsets`` in the same transaction as the rows."""
    stream = Keys(redis.prefix).feedback
    client = redis.client()
    try:
        with warehouse.get_connection() as conn:
            report = consume_feedback(client, stream, conn, DUCKDB_SCHEMA, config.max_entries)
            total = conn.execute(
                f"select count(*) from {DUCKDB_SCHEMA}.feedback_events where stream = ?", [stream]
            ).fetchone()[0]
    finally:
        client.close()
    for bad in report.rejected[:20]:
        context.log.warning(f"{stream} entry {bad.stream_id} skipped: {bad.reason}")
    if report.lost_entries:
        context.log.warning(
            f"{report.lost_entries} entries of {stream} were dropped by Redis before they were "
            "consumed (trimmed past RECSYS_FEEDBACK_MAXLEN, or Redis restarted without "
            "persistence): run this more often or raise RECSYS_FEEDBACK_MAXLEN"
        )
    return MaterializeResult(
        metadata={
            "stream": stream,
            "previous_id": report.previous_id,
            "last_id": report.last_id,
            "entries_read": report.read,
            "rows_stored": report.stored,
            "entries_rejected": len(report.rejected),
            "rejected_examples": MetadataValue.json(
                [{"id": b.stream_id, "reason": b.reason} for b in report.rejected[:20]]
            ),
            "events_by_type": report.by_event,
            "days": report.days,
            "entries_lost_before_consumed": report.lost_entries,
            "dagster/row_count": int(total),
        }
    )


class OnlineABConfig(Config):
    # The share of users the experiment meant to send to the treatment (the SRM check's
    # expectation); the service's experiments default to 0.5.
    treatment_share: float = 0.5
    level: float = 0.95  # confidence level of the CTR difference's interval


@asset(group_name=GROUP, pool=DUCKDB_POOL, deps=[feedback_events], kinds={"duckdb", "polars"})
def online_ab_report(
    context: AssetExecutionContext,
    config: OnlineABConfig,
    redis: RedisResource,
    warehouse: DuckDBResource,
) -> pl.DataFrame:
    """Impressions, clicks and CTR per experiment arm and day (``day = 'all'``: the whole run);
    on each experiment's treatment rows the CTR difference with its delta-method CI (CTR is a
    ratio of per-user sums: users are randomised, not impressions), Welch's test on per-user CTR
    and the sample-ratio-mismatch check. Feedback outside an experiment is reported per model
    under experiment ``(none)``."""
    stream = Keys(redis.prefix).feedback
    with warehouse.get_connection() as conn:
        ensure_tables(conn, DUCKDB_SCHEMA)
        events = pl.from_arrow(
            conn.execute(
                f"select * exclude (stream) from {DUCKDB_SCHEMA}.feedback_events "
                "where stream = ? and event in ('impression', 'click')",
                [stream],
            ).fetch_arrow_table()
        ).cast(FEEDBACK_SCHEMA)  # type: ignore[arg-type]
    table = online_ab_table(events, config.treatment_share, config.level)
    overall = table.filter(pl.col("day") == ALL_DAYS).drop("day")
    context.add_output_metadata(
        frame_metadata(
            table,
            stream=stream,
            overall=MetadataValue.md(markdown_table(overall, max_rows=40)),
            srm_mismatch=bool(table["srm_mismatch"].fill_null(False).any()),
        )
    )
    return table
