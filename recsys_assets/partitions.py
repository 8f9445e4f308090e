"""Partition definitions: the days of raw events, and one static partition per model.

The days are dynamic: their keys (``YYYY-MM-DD``, UTC) are the days found in the events file,
registered on the Dagster instance before events are loaded (see
``recsys_assets.assets.ingestion.register_event_days``), so data from any period is loaded
without a setting. Nothing here reads the environment.
"""

from __future__ import annotations

from dagster import DynamicPartitionsDefinition, StaticPartitionsDefinition

from recsys_assets.core.models.registry import MODEL_REGISTRY

event_days = DynamicPartitionsDefinition(name="event_days")
model_partitions = StaticPartitionsDefinition(list(MODEL_REGISTRY))

# Run tags that make one run cover a range of partitions (Dagster's documented run tags; with a
# single-run backfill policy, raw_events loads the whole range with one read of the file).
PARTITION_TAG = "dagster/partition"
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    return {PARTITION_RANGE_START_TAG: first, PARTITION_RANGE_END_TAG: last}
