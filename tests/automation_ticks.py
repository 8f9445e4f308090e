"""Drive declarative automation without the daemon: evaluate a tick, run what it asked for.

Shared by the automation tests (on a stand-in graph) and the fresh-loop test (on the real one).
The runs are grouped as the daemon groups them: one run for the unpartitioned assets of a tick,
one run per partition key for each partitioned set (Dagster cannot mix partitions in one run).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

PARTITION_TAG = "dagster/partition"


@dataclass
class Tick:
    requested: dict[str, set[str | None]]  # asset -> partition keys (None: unpartitioned)
    runs: list[tuple[str | None, list[str]]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(keys) for keys in self.requested.values())


def runs_of(defs: dg.Definitions, requested: dict[dg.AssetKey, set[str | None]]):
    """(partition key, asset keys) per run, in the daemon's grouping."""
    graph = defs.resolve_asset_graph()
    runs: dict[tuple[int, str | None], list[dg.AssetKey]] = defaultdict(list)
    pdefs: list = []
    for key, partitions in requested.items():
        pdef = graph.get(key).partitions_def
        if pdef not in pdefs:
            pdefs.append(pdef)
        for partition in partitions:
            runs[(pdefs.index(pdef), partition)].append(key)
    return [(partition, keys) for (_, partition), keys in sorted(runs.items(), key=str)]


def tick(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    cursor,
    execute: Callable[[str | None, list[dg.AssetKey]], None],
) -> tuple[Tick, object]:
    """One evaluation of every automation condition, then every requested run, in order."""
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    graph = defs.resolve_asset_graph()
    requested = {
        key: set(result.get_requested_partitions(key))
        for key in graph.get_all_asset_keys()
        if result.get_num_requested(key)
    }
    done = Tick({k.to_user_string(): v for k, v in requested.items()})
    for partition, keys in runs_of(defs, requested):
        execute(partition, keys)
        done.runs.append((partition, sorted(k.to_user_string() for k in keys)))
    return done, result.cursor


def settle(defs, instance, execute, cursor=None, max_ticks: int = 30):
    """Tick until a tick asks for nothing; returns the ticks that asked for something."""
    ticks: list[Tick] = []
    for _ in range(max_ticks):
        done, cursor = tick(defs, instance, cursor, execute)
        if not done.count:
            return ticks, cursor
        ticks.append(done)
    raise AssertionError(f"automation did not settle in {max_ticks} ticks: {ticks[-3:]}")


def in_process_executor(defs: dg.Definitions, instance: dg.DagsterInstance, run_config=None):
    """Execute one requested run in-process through the global asset job (as the daemon would)."""
    from recsys_assets.tracking import end_active_mlflow_run

    job = defs.resolve_implicit_global_asset_job_def()

    def execute(partition: str | None, keys: list[dg.AssetKey]) -> None:
        result = job.execute_in_process(
            instance=instance,
            asset_selection=keys,
            tags={PARTITION_TAG: partition} if partition is not None else None,
            run_config=run_config,
            raise_on_error=True,
        )
        # the daemon runs each run in its own process; in one process the MLflow run that an
        # asset opened must be closed between runs (as the main job does)
        end_active_mlflow_run()
        assert result.success

    return execute


def times_requested(ticks: list[Tick]) -> dict[tuple[str, str | None], int]:
    counts: dict[tuple[str, str | None], int] = defaultdict(int)
    for t in ticks:
        for asset, partitions in t.requested.items():
            for p in partitions:
                counts[(asset, p)] += 1
    return dict(counts)


def first_tick(ticks: list[Tick], asset: str) -> int:
    return next(i for i, t in enumerate(ticks) if asset in t.requested)
