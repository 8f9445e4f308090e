"""The feedback sensor: new entries on the Redis stream request a run of ``feedback_job``.

Started by default (``make dev`` runs the daemon), so feedback reaches ``online_ab_report``
with no further action. It reads only Redis, never DuckDB: a read-only DuckDB connection from
the daemon could take the file lock from a run that is writing. Its cursor is the newest stream
id it requested a run for; the run itself consumes from the offset stored in DuckDB, so a run
that failed is made good by the next one (the next new entry requests it).
"""

from __future__ import annotations

import time

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SkipReason, sensor

from recsys_assets.defs.feedback.jobs import feedback_job
from recsys_assets.resources import RedisResource
from recsys_serving.redis_layout.keys import Keys

MIN_NEW_ENTRIES = 100  # a batch worth a run ...
MAX_AGE_SECONDS = 300.0  # ... or fewer entries, once the oldest has waited this long
START = "0-0"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def pending_feedback(client, stream: str, after: str, enough: int) -> tuple[int, str | None, str]:
    """(entries after ``after`` counted up to ``enough``, the oldest one's id, the newest id)."""
    head = client.xrange(stream, min=f"({after}", max="+", count=enough)
    if not head:
        return 0, None, after
    newest = client.xrevrange(stream, max="+", min="-", count=1)
    return len(head), _text(head[0][0]), _text(newest[0][0])


def feedback_decision(
    pending: int, oldest_id: str | None, now_ms: int, min_entries: int, max_age_s: float
) -> str | None:
    """Why a run is due (None: not yet)."""
    if pending == 0 or oldest_id is None:
        return None
    if pending >= min_entries:
        return f"{pending}+ new feedback entries (threshold {min_entries})"
    age = (now_ms - int(oldest_id.split("-")[0])) / 1000
    if age >= max_age_s:
        return (
            f"{pending} new feedback entries, the oldest {age:.0f} s old (limit {max_age_s:.0f} s)"
        )
    return None


@sensor(
    job=feedback_job,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Consume new feedback and rebuild online_ab_report when enough has accumulated.",
)
def feedback_sensor(context: SensorEvaluationContext, redis: RedisResource):
    import redis as redis_lib

    stream = Keys(redis.prefix).feedback
    after = context.cursor or START
    client = None
    try:
        # inside the try: a cluster client connects (and can fail) when it is created
        client = redis.client()
        pending, oldest, newest = pending_feedback(client, stream, after, MIN_NEW_ENTRIES)
    except (redis_lib.ConnectionError, redis_lib.exceptions.RedisClusterException) as exc:
        return SkipReason(f"Redis at {redis.url} unreachable: {exc}")
    finally:
        if client is not None:
            client.close()
    why = feedback_decision(
        pending, oldest, int(time.time() * 1000), MIN_NEW_ENTRIES, MAX_AGE_SECONDS
    )
    if why is None:
        return SkipReason(f"{pending} new entries on {stream} after {after}: not yet")
    context.update_cursor(newest)
    # One run per newest id: a second evaluation before the cursor is stored asks for nothing new.
    return RunRequest(run_key=f"{stream}:{newest}", tags={"recsys/feedback_reason": why})
