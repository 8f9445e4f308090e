"""Sensors of the raw folder, running by default: the daemon loads exactly what changed.

``events_file_sensor`` registers new days of ``events.csv`` and loads the days whose rows
changed (one run per range of consecutive days); ``catalog_files_sensor`` reloads the category
tree or the property history when their files change. Everything downstream then refreshes by
declarative automation (``defs/automation``), once.
"""

import json

from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from recsys_assets.defs.ingestion.jobs import ingest_job
from recsys_assets.defs.ingestion.raw_changes import (
    affected_days,
    contiguous_ranges,
    day_digests,
    file_stamp,
    load_cursor,
)
from recsys_assets.partitions import event_days, partition_range_tags
from recsys_assets.resources import RetailRocketSource

# Ticks are cheap (a stat per file; the events file is read only when its stamp changed).
INTERVAL_SECONDS = 30
RAW_EVENTS = AssetKey("raw_events")
CATALOG_ASSETS = {
    "category_tree": ("category_tree.csv",),
    "item_property_history": ("item_properties_part1.csv", "item_properties_part2.csv"),
}


@sensor(
    job=ingest_job,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=INTERVAL_SECONDS,
)
def events_file_sensor(context: SensorEvaluationContext, source: RetailRocketSource):
    """When events.csv changes, register its new days and load exactly the affected days."""
    from recsys_assets.core.data.retailrocket import read_events

    path = source.events_path
    stamp = file_stamp(path)
    cursor = load_cursor(context.cursor)
    if cursor.get("stamp") == stamp:
        return SkipReason(f"{path} unchanged")
    events, _ = read_events(path)
    digests = day_digests(events)
    instance = context.instance
    registered = instance.get_dynamic_partitions(event_days.name)
    new = sorted(day for day in digests if day not in registered)
    stale = None if "days" in cursor else _stale_days(instance, registered, path) | set(new)
    days = affected_days(digests, cursor.get("days"), stale or set())
    order = [*registered, *new]
    # a day that vanished from the file and was never registered has nothing stored to clear
    days = [day for day in days if day in order]
    requests = [
        RunRequest(run_key=f"{stamp}:{first}..{last}", tags=partition_range_tags(first, last))
        for first, last in contiguous_ranges(days, order)
    ]
    context.log.info(f"{path}: {len(new)} new days, {len(days)} days to load")
    return SensorResult(
        dynamic_partitions_requests=[event_days.build_add_request(new)] if new else [],
        run_requests=requests,
        cursor=json.dumps({"stamp": stamp, "days": digests}),
    )


def _stale_days(instance: DagsterInstance, registered: list[str], path) -> set[str]:
    """First look (no digests yet): days never loaded, or loaded before the file last changed."""
    loaded = instance.get_materialized_partitions(RAW_EVENTS)
    latest = instance.get_latest_materialization_event(RAW_EVENTS)
    if latest is not None and latest.timestamp * 1e9 < path.stat().st_mtime_ns:
        return set(registered)
    return {day for day in registered if day not in loaded}


@sensor(
    target=AssetSelection.assets(*CATALOG_ASSETS),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=INTERVAL_SECONDS,
)
def catalog_files_sensor(context: SensorEvaluationContext, source: RetailRocketSource):
    """When the category tree or a property file changes, reload the asset that reads it."""
    raw = source.ensure()
    stamps = {name: file_stamp(raw / name) for files in CATALOG_ASSETS.values() for name in files}
    previous = load_cursor(context.cursor)
    changed = []
    for asset, files in CATALOG_ASSETS.items():
        if previous:
            if any(previous.get(name) != stamps[name] for name in files):
                changed.append(asset)
        elif _older_than_files(context.instance, AssetKey(asset), [raw / f for f in files]):
            changed.append(asset)
    requests = (
        [
            RunRequest(
                run_key=":".join(stamps[n] for a in changed for n in CATALOG_ASSETS[a]),
                asset_selection=[AssetKey(a) for a in changed],
            )
        ]
        if changed
        else []
    )
    return SensorResult(run_requests=requests, cursor=json.dumps(stamps))


def _older_than_files(instance: DagsterInstance, key: AssetKey, paths) -> bool:
    latest = instance.get_latest_materialization_event(key)
    if latest is None:
        return True
    return any(latest.timestamp * 1e9 < p.stat().st_mtime_ns for p in paths)
