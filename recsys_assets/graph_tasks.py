"""The main job as Dagster runs with their dependencies, for workers that run them side by side.

``plan_stages`` (pipeline.py) groups the graph into stages that run one after another; with one
process that is all there is to it. With several worker processes, waiting for a whole stage
wastes the cores: at scale 1.0 the serving bundle (two minutes) waited for the session metrics
it does not need, the analytics that no model reads waited for nothing, and the session metrics
waited for the Hybrid although they read only three other models. Here each stage becomes runs
(*tasks*): an unpartitioned stage one run per asset, a model stage one run per model (its four
steps in order), a single-run stage (the event days) one run; a task may start once the tasks
that materialise its parents have finished. Nothing here starts a process (pipeline.py does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dagster import AssetKey, DagsterInstance, Definitions, SpecificPartitionsPartitionMapping

from recsys_assets.partitions import PARTITION_TAG, partition_waves


@dataclass(frozen=True)
class Task:
    """One Dagster run: ``assets`` with run ``tags``, after the tasks numbered in ``after``."""

    assets: tuple[AssetKey, ...]
    tags: dict[str, str] = field(hash=False)
    after: frozenset[int]
    rank: tuple  # smaller starts first among the tasks that may start
    partition: str | None = None  # the run's one partition (a model), if any
    group: str | None = None  # the Dagster asset group of its assets, when they share one

    @property
    def label(self) -> str:
        names = ", ".join(key.to_user_string() for key in self.assets)
        return f"{names} [{self.partition}]" if self.partition else names


# Asset groups of short runs that read only the tables: they run in the first group, on a
# worker that would otherwise wait (at scale 1.0 one worker idled ~25 s of the first group's
# ~40 s while the other read the property files, then built the training data), instead of
# one after another at the end. Their four runs took 1-4 s each there; the ablation report
# (30 s) is not one of them: it would hold the first group, and the models, back.
FILLER_GROUPS = frozenset({"analytics"})


def plan_tasks(
    defs: Definitions,
    instance: DagsterInstance,
    stages: Sequence,
    partition_keys: Sequence[str] | None = None,
) -> list[Task]:
    """The ``stages`` (in ``plan_stages``' order) as tasks, numbered by their list position.

    Dependencies on assets outside ``stages`` count as met (their stage ran before). Dispatch
    rank: first what the models are waiting for (the tables their training data is built
    from), then the short runs of ``FILLER_GROUPS`` that read only those, then the models
    (longest first, the Hybrid after the models it builds on), then the rest (reports, the
    bundle) in graph order. ``partition_keys`` limits a partitioned stage's
    runs to those keys (one stage, as ``run_stage`` is given).
    """
    from recsys_assets.pipeline import stage_runs

    graph = defs.resolve_asset_graph()
    drafts: list[dict] = []  # assets, tags, partition, wave, stage position
    for position, stage in enumerate(stages):
        runs = stage_runs(stage, instance, partition_keys)
        if stage.partitions_def is None:
            drafts += [
                {"assets": (key,), "tags": {}, "partition": None, "wave": 0, "at": position}
                for key in stage.assets
            ]
        elif stage.single_run:
            drafts.append(
                {
                    "assets": stage.assets,
                    "tags": runs[0],
                    "partition": None,
                    "wave": 0,
                    "at": position,
                }
            )
        else:
            keys = [tags[PARTITION_TAG] for tags in runs]
            for wave, members in enumerate(partition_waves(stage.partitions_def, keys)):
                drafts += [
                    {
                        "assets": stage.assets,
                        "tags": {PARTITION_TAG: key},
                        "partition": key,
                        "wave": wave,
                        "at": position,
                    }
                    for key in members
                ]

    # who materialises what: (asset, partition or None) -> task number
    producer: dict[tuple[AssetKey, str | None], int] = {}
    for number, draft in enumerate(drafts):
        for key in draft["assets"]:
            producer[(key, draft["partition"])] = number
    partitions_of: dict[AssetKey, list[str]] = {}
    for key, partition in producer:
        if partition is not None:
            partitions_of.setdefault(key, []).append(partition)

    def producers(child: AssetKey, parent: AssetKey, partition: str | None) -> set[int]:
        if (parent, None) in producer:  # unpartitioned, or one run over every partition
            return {producer[(parent, None)]}
        if parent not in partitions_of:  # not in these stages: already materialised
            return set()
        if partition is not None:  # a model's own chain: the same partition
            return {producer[(parent, partition)]} if (parent, partition) in producer else set()
        mapping = graph.get_partition_mapping(child, parent)
        wanted = (
            mapping.partition_keys
            if isinstance(mapping, SpecificPartitionsPartitionMapping)
            else partitions_of[parent]
        )
        return {producer[(parent, k)] for k in wanted if (parent, k) in producer}

    after: list[set[int]] = []
    for number, draft in enumerate(drafts):
        needs: set[int] = set()
        for key in draft["assets"]:
            for parent in graph.get(key).parent_keys:
                needs |= producers(key, parent, draft["partition"])
        # a later wave of the same stage (the Hybrid) waits for every run of the earlier ones
        needs |= {
            other
            for other, d in enumerate(drafts)
            if d["at"] == draft["at"] and d["wave"] < draft["wave"]
        }
        needs.discard(number)
        after.append(needs)

    feeds_models = _ancestors(
        after, [n for n, d in enumerate(drafts) if d["partition"] is not None]
    )
    groups = [{graph.get(key).group_name for key in d["assets"]} for d in drafts]
    group_of = [next(iter(names)) if len(names) == 1 else None for names in groups]
    # the rest: the runs more others wait for first (the leaderboard before the CTR report, so
    # that the serving bundle, the longest of the last runs, starts as early as it can)
    waiting_on = [0] * len(drafts)
    for number in range(len(drafts)):
        for other in _ancestors(after, [number]):
            waiting_on[other] += 1
    tasks = []
    for number, draft in enumerate(drafts):
        if draft["partition"] is not None:
            rank = (1, draft["wave"], number)
        elif number in feeds_models:
            rank = (0, 0, number)
        elif group_of[number] in FILLER_GROUPS and after[number] <= feeds_models:
            # a filler: after what the models wait for whenever both may start
            rank = (0, 1, number)
        else:
            rank = (2, -waiting_on[number], number)
        tasks.append(
            Task(
                assets=tuple(draft["assets"]),
                tags=dict(draft["tags"]),
                after=frozenset(after[number]),
                rank=rank,
                partition=draft["partition"],
                group=group_of[number],
            )
        )
    return tasks


def _ancestors(after: list[set[int]], tasks: list[int]) -> set[int]:
    seen: set[int] = set()
    todo = [p for t in tasks for p in after[t]]
    while todo:
        task = todo.pop()
        if task not in seen:
            seen.add(task)
            todo.extend(after[task])
    return seen


def ready(tasks: Sequence[Task], done: set[int], started: set[int]) -> list[int]:
    """The tasks that may start now, best first.

    The rest (rank class 2) waits until everything the models wait for (class 0) is done: at
    scale 1.0 the ablation report took the idle worker while the training data was built, and
    the second model started 70 s late behind it; a worker idling for seconds costs less.
    """
    feeding = [n for n, task in enumerate(tasks) if task.rank[:2] == (0, 0)]
    models_wait = any(n not in done for n in feeding)
    # A filler (rank (0, 1)) takes a worker only while one of those tasks still waits for its
    # inputs, or once all are done; never beside the last of them (the training data, which
    # builds on two cores when alone: at scale 1.0 the conversion funnel beside it took 8.8 s
    # instead of 3 and the training data 23 s instead of 13), even when both may start now.
    inputs_pending = any(n not in started and not tasks[n].after <= done for n in feeding)
    fillers_wait = models_wait and not inputs_pending
    waiting = [
        n
        for n, task in enumerate(tasks)
        if n not in started
        and task.after <= done
        and not (models_wait and task.rank[0] == 2)
        and not (fillers_wait and task.rank[:2] == (0, 1))
    ]
    return sorted(waiting, key=lambda n: tasks[n].rank)


def phases(tasks: Sequence[Task]) -> list[tuple[str, list[int], bool]]:
    """The tasks in the three groups the main job runs one after another, each with fresh
    worker processes: (name, task numbers, whether they run side by side).

    Fresh processes per group keep the memory in bounds: a worker that had built the tables,
    then trained a model and then scored the Hybrid held what each left behind, and with two
    such workers the whole graph at scale 1.0 peaked at 10.3 GB instead of 7.7 GB. Part of that
    was Dagster keeping each run's outputs alive (``pipeline._drop_outputs`` now frees them); a
    pool for the whole graph has not been measured since. The groups:

    - what the models wait for (the tables, the training data), side by side, with the short
      analytics runs that read only those tables (``FILLER_GROUPS``) on a worker that waits;
    - the models that build on no other (longest first), and beside them what reads only those
      models (the session metrics);
    - the rest, one run at a time on every core: the Hybrid, the ablation report (2.6 GB at
      scale 1.0, 4.5 GB before ItemKNN's k 200 variant kept to the items with events), the
      reports and the serving bundle (it loads every model: 5.2 GB).
    """
    first = [n for n, task in enumerate(tasks) if task.rank[0] == 0]
    models = {n for n, task in enumerate(tasks) if task.rank[0] == 1 and task.rank[1] == 0}
    with_models = sorted(
        models
        | {
            n
            for n, task in enumerate(tasks)
            if task.rank[0] == 2 and task.after & models and task.after <= models | set(first)
        }
    )
    rest = sorted(set(range(len(tasks))) - set(first) - set(with_models))
    groups = [
        ("tables and training data", first, True),
        ("models", with_models, True),
        ("models built on others, reports, bundle", rest, False),
    ]
    return [group for group in groups if group[1]]
