"""Automation conditions: every derived asset refreshes once per upstream change.

Dagster's ``eager()`` looks at an asset's direct dependencies only. That is enough along a chain
that runs in one run (``interactions → splits → item_catalog``; one model's ``tuned_params →
trained_model → eval_recommendations → model_metrics``), but not across a change of partitions:
when ``splits`` is rebuilt, ``serving_bundle`` (which reads ``splits`` directly) would be
requested at once with the old models, and again when the models are retrained — two launches,
the first one publishing stale models.

So each asset also waits while any ancestor that reaches it through another partitions
definition is still in flight: in a run (queued or started), requested on this tick, or itself
waiting to refresh (one of its inputs changed after it last ran). The wave of a change then
reaches ``serving_bundle`` once, after every model partition and the leaderboard. Assets that
only read analytics inputs are not downstream of the models, so a change of association rules or
the funnel refreshes ``ui_reports`` and nothing else.

The roots that read files (``raw_events``, ``category_tree``, ``item_property_history``) have no
condition: the raw-folder sensors (``defs/ingestion/sensors.py``) load exactly what changed. The
feedback domain is driven by its own sensor on the Redis stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dagster import (
    AssetKey,
    AssetSelection,
    AutomationCondition,
    Definitions,
    IdentityPartitionMapping,
)

# Loaded by the raw-folder sensors, not by automation.
SENSOR_ROOTS = AssetSelection.assets("raw_events", "category_tree", "item_property_history")
# Consumed by the feedback sensor from the Redis stream (defs/feedback/sensors.py).
FEEDBACK = AssetSelection.groups("feedback")
AUTOMATED = AssetSelection.all() - SENSOR_ROOTS - FEEDBACK


def waiting_to_refresh() -> AutomationCondition:
    """An input changed (or the asset went missing) after the asset was last requested or ran."""
    return (
        (AutomationCondition.newly_missing() | AutomationCondition.any_deps_updated())
        .since_last_handled()
        .with_label("waiting_to_refresh")
    )


def in_flight() -> AutomationCondition:
    """Will change soon: in a run (queued or started), or waiting to refresh.

    An asset requested on this tick is waiting to refresh on this tick too (its inputs changed),
    so this also covers requests of the same tick, which ``will_be_requested`` reports only for
    assets that can share the asking asset's run.
    """
    return (AutomationCondition.in_progress() | waiting_to_refresh()).with_label("in_flight")


def refresh_condition(upstream_in_other_runs: Iterable[AssetKey]) -> AutomationCondition:
    """``eager()``, held back while an ancestor that runs in other runs is still in flight."""
    keys = sorted(upstream_in_other_runs)
    condition = AutomationCondition.eager()
    if not keys:
        return condition
    blocked = AutomationCondition.asset_matches(keys[0], in_flight())
    for key in keys[1:]:
        blocked = blocked | AutomationCondition.asset_matches(key, in_flight())
    return (condition & ~blocked.with_label("upstream_in_flight")).with_label("refresh_once")


def upstream_in_other_runs(graph: Any, key: AssetKey) -> set[AssetKey]:
    """Ancestors of ``key`` whose changes reach it through an asset that cannot share its run.

    A parent that cannot run in the same run as its child (another partitions definition, or a
    mapping other than one partition to the same one) and all its ancestors; along parents that
    can, the same question one level up. ``graph`` is ``defs.resolve_asset_graph()``.
    """
    found: set[AssetKey] = set()
    for parent in graph.get(key).parent_keys:
        if _same_run(graph, key, parent):
            found |= upstream_in_other_runs(graph, parent)
        else:
            found |= {parent, *_ancestors(graph, parent)}
    return found


def _same_run(graph: Any, child: AssetKey, parent: AssetKey) -> bool:
    """Whether Dagster can materialise ``parent`` and ``child`` in one run."""
    pdef = graph.get(child).partitions_def
    if pdef != graph.get(parent).partitions_def:
        return False
    return pdef is None or isinstance(
        graph.get_partition_mapping(child, parent), IdentityPartitionMapping
    )


def _ancestors(graph: Any, key: AssetKey) -> set[AssetKey]:
    seen: set[AssetKey] = set()
    stack = list(graph.get(key).parent_keys)
    while stack:
        k = stack.pop()
        if k not in seen:
            seen.add(k)
            stack.extend(graph.get(k).parent_keys)
    return seen


def automation_conditions(defs: Definitions) -> Mapping[AssetKey, AutomationCondition]:
    """The condition of every automated asset of ``defs``."""
    graph = defs.resolve_asset_graph()
    keys = AUTOMATED.resolve(graph, allow_missing=True)
    return {
        key: refresh_condition(upstream_in_other_runs(graph, key))
        for key in keys
        if graph.get(key).is_materializable
    }


def with_automation(defs: Definitions) -> Definitions:
    """``defs`` with the conditions attached (the asset modules stay free of automation)."""
    conditions = automation_conditions(defs)
    return defs.map_asset_specs(
        func=lambda spec: (
            spec.replace_attributes(automation_condition=conditions[spec.key])
            if spec.key in conditions
            else spec
        )
    )
