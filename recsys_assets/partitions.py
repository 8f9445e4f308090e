"""Partition definitions: the days of raw events, and one static partition per model.

The days are dynamic: their keys (``YYYY-MM-DD``, UTC) are the days found in the events file,
registered on the Dagster instance before events are loaded (``register_event_days``), so data
from any period is loaded without a setting. Nothing here reads the environment.
"""

from __future__ import annotations

from dagster import DagsterInstance, DynamicPartitionsDefinition, StaticPartitionsDefinition

from recsys_assets.core.models.registry import MODEL_REGISTRY
from recsys_assets.resources import RetailRocketSource

event_days = DynamicPartitionsDefinition(name="event_days")
model_partitions = StaticPartitionsDefinition(list(MODEL_REGISTRY))

# Run tags that make one run cover a range of partitions (Dagster's documented run tags; with a
# single-run backfill policy, raw_events loads the whole range with one read of the file).
PARTITION_TAG = "dagster/partition"
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    return {PARTITION_RANGE_START_TAG: first, PARTITION_RANGE_END_TAG: last}


def register_event_days(instance: DagsterInstance, source: RetailRocketSource) -> list[str]:
    """Add every day of the events file as a partition of ``raw_events``; return all its days.

    The file is read and validated whole (a bad file fails here, naming file, row and column,
    before anything is written). Days already registered are kept; only new ones are added.
    """
    from recsys_assets.core.data.retailrocket import event_days as days_of

    days = days_of(source.events_path)
    new = unregistered_days(instance, days)
    if new:
        instance.add_dynamic_partitions(event_days.name, new)
    return days


def unregistered_days(instance: DagsterInstance, days: list[str]) -> list[str]:
    """The days that are not yet partitions of ``raw_events``, in the order given."""
    known = set(instance.get_dynamic_partitions(event_days.name))
    return [day for day in days if day not in known]


# The models that took longest at scale 1.0 (benchmarks/bench_graph.py: NCF and GRU4Rec train
# against a wall-clock budget on one thread, ALS is next): started first when partitions run
# side by side, so that the short ones fill in around them instead of running last alone.
LONGEST_MODELS_FIRST = ("ncf", "gru4rec", "als")


def partition_waves(partitions_def: object, keys: list[str]) -> list[list[str]]:
    """``keys`` in the groups that may run side by side, in order; within a group, the order to
    start them in.

    A model built on the others (the Hybrid: it takes their stored models as its sources) waits
    for every other model; the rest are independent. Other partitions are one group as given.
    """
    if partitions_def is not model_partitions:
        return [list(keys)] if keys else []

    def builds_on_others(key: str) -> bool:
        return hasattr(MODEL_REGISTRY[key], "fit_with_sources")

    first = [k for k in keys if not builds_on_others(k)]
    rank = {name: i for i, name in enumerate(LONGEST_MODELS_FIRST)}
    first.sort(key=lambda k: rank.get(k, len(rank)))  # stable: registry order after these
    last = [k for k in keys if builds_on_others(k)]
    return [wave for wave in (first, last) if wave]
