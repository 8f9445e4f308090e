"""The main job: materialise the whole asset graph into the Dagster instance, stage by stage.

``python -m recsys_assets.pipeline`` is what ``make run`` calls. It does what a user would do with
``dagster asset materialize`` (one run per stage, recorded in ``$DAGSTER_HOME``, so ``dagster dev``
shows every materialisation afterwards), but loads the code once and runs each stage in-process.

The stages are derived from the Definitions (``plan_stages``): a Dagster run covers one
partitions definition, so the assets are grouped by partitions definition in topological order.
A stage whose assets all have a single-run backfill policy (the days of events) is one run over
all its partitions; any other partitioned stage (the models) is one run per partition. With
``RECSYS_WORKERS`` > 1 the stages are split into runs with dependencies (``graph_tasks.py``) that
worker processes take as soon as the runs they read are done (``run_tasks_in_workers``), in
three groups with fresh workers each (``graph_tasks.phases``); with 1,
the stages run one after another in this process. Adding an asset to a domain module of
``recsys_assets.defs`` adds it to the main job, with no edit here.

Before the first run, the raw folder is checked (the embedded default is generated only into an
empty default folder) and the days of the events file are registered as partitions, so the
main job loads data of any period and the warehouse holds exactly the file's events.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from graphlib import TopologicalSorter
from pathlib import Path

from dagster import (
    AssetKey,
    BackfillPolicy,
    DagsterInstance,
    Definitions,
    PartitionsDefinition,
)

from recsys_assets.core.models.run_models import forget as forget_run_models
from recsys_assets.settings import Settings
from recsys_assets.tracking import MLFLOW_EXPERIMENT, end_active_mlflow_run

QUIET_RUN_CONFIG = {"loggers": {"progress": {"config": {"log_level": "INFO"}}}}
VERBOSE_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def model_params_run_config(params_json: str) -> dict:
    """The main job's quiet run config with per-model parameter overrides (JSON, as the
    ``params_json`` of ``tuned_params`` and ``trained_model``) given to tuning and training."""
    ops = {"config": {"params_json": params_json}}
    return {**QUIET_RUN_CONFIG, "ops": {"tuned_params": ops, "trained_model": ops}}


@dataclass(frozen=True)
class Stage:
    """Assets that one Dagster run (or one run per partition) can materialise together."""

    assets: tuple[AssetKey, ...]
    partitions_def: PartitionsDefinition | None = None
    single_run: bool = False  # one run over all partitions instead of one run per partition

    @property
    def name(self) -> str:
        return ", ".join(key.to_user_string() for key in self.assets)


def plan_stages(defs: Definitions, selection: Iterable[AssetKey] | None = None) -> list[Stage]:
    """The selected assets (default: every materialisable one) as stages in run order.

    Each asset gets a level: the largest level of its parents, plus one where a parent has
    another partitions definition (the two cannot share a run). Assets without a parent in the
    selection (they read files) move up to their consumers' level when the partitions match,
    so they share their consumers' run instead of getting one of their own. A stage is the
    assets of one level and one partitions definition; levels run in order.
    """
    graph = defs.resolve_asset_graph()
    keys = (
        sorted(selection)
        if selection is not None
        else sorted(k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable)
    )
    chosen = set(keys)
    parents = {k: sorted(p for p in graph.get(k).parent_keys if p in chosen) for k in keys}
    children: dict[AssetKey, list[AssetKey]] = {k: [] for k in keys}
    for key, ps in parents.items():
        for p in ps:
            children[p].append(key)
    pdef = {k: graph.get(k).partitions_def for k in keys}
    order = list(TopologicalSorter(parents).static_order())

    def step(a: AssetKey, b: AssetKey) -> int:
        return int(pdef[a] != pdef[b])

    level: dict[AssetKey, int] = {}
    for key in order:
        level[key] = max((level[p] + step(p, key) for p in parents[key]), default=0)
    for key in order:
        if not parents[key] and children[key]:
            level[key] = max(0, min(level[c] - step(key, c) for c in children[key]))

    groups: dict[tuple[int, int], list[AssetKey]] = {}
    first_of: list[PartitionsDefinition | None] = []
    for key in order:
        if pdef[key] not in first_of:
            first_of.append(pdef[key])
        groups.setdefault((level[key], first_of.index(pdef[key])), []).append(key)
    stages = []
    for _, members in sorted(groups.items()):
        policies = [graph.get(k).backfill_policy for k in members]
        stages.append(
            Stage(
                assets=tuple(members),
                partitions_def=pdef[members[0]],
                single_run=all(p == BackfillPolicy.single_run() for p in policies),
            )
        )
    return stages


def stage_of(defs: Definitions, *asset_names: str) -> Stage:
    """The one stage that materialises these assets together (benchmarks run single assets)."""
    stages = plan_stages(defs, [AssetKey(name) for name in asset_names])
    if len(stages) != 1:
        raise ValueError(f"{asset_names} need {len(stages)} runs: {[s.name for s in stages]}")
    return stages[0]


def stage_runs(
    stage: Stage, instance: DagsterInstance, partition_keys: Sequence[str] | None = None
) -> list[dict[str, str]]:
    """The run tags of each run of a stage: none, one range, or one partition per run."""
    from recsys_assets.partitions import PARTITION_TAG, partition_range_tags

    if stage.partitions_def is None:
        return [{}]
    keys = list(
        partition_keys
        if partition_keys is not None
        else stage.partitions_def.get_partition_keys(dynamic_partitions_store=instance)
    )
    if not keys:
        raise SystemExit(f"stage '{stage.name}': no partitions to materialise")
    if stage.single_run:
        return [partition_range_tags(keys[0], keys[-1])]
    return [{PARTITION_TAG: key} for key in keys]


def run_stage(
    defs: Definitions,
    instance: DagsterInstance,
    stage: Stage,
    partition_keys: Sequence[str] | None = None,
    run_config: dict | None = None,
    workers: int = 1,
    settings: Settings | None = None,
) -> float:
    """Execute one stage (all partitions unless ``partition_keys``); return its seconds.

    With ``workers`` > 1 (and the ``settings`` the Definitions were built from, so that another
    process can build them again), every run executes in a worker process and the partitions of
    a stage that runs one partition per run (the models) run side by side, ``workers`` at a
    time (:func:`_run_in_workers`); this process only plans and waits, so its own memory (1.4 GB
    after the analytics stage at scale 1.0) does not add to the workers'. Otherwise the runs
    execute here, one after another.
    """
    config = run_config if run_config is not None else QUIET_RUN_CONFIG
    start = time.perf_counter()
    runs = stage_runs(stage, instance, partition_keys)
    in_workers = (
        workers > 1
        and settings is not None
        and instance.is_persistent  # the workers open the same instance from its ref
    )
    if in_workers:
        from recsys_assets.graph_tasks import plan_tasks

        tasks = plan_tasks(defs, instance, [stage], partition_keys)
        run_tasks_in_workers(tasks, config, workers, settings, instance)
        return time.perf_counter() - start
    for tags in runs:
        _raise_on_failure(stage, tags, _execute_run(defs, instance, stage.assets, tags, config))
    return time.perf_counter() - start


def _execute_run(
    defs: Definitions,
    instance: DagsterInstance,
    assets: Sequence[AssetKey],
    tags: dict[str, str],
    run_config: dict,
) -> list[str]:
    """One Dagster run of ``assets``; the failed steps as "step: the user's error" lines."""
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=instance,
        asset_selection=list(assets),
        tags=tags,
        raise_on_error=False,
        run_config=run_config,
    )
    end_active_mlflow_run()
    _drop_outputs(result)
    forget_run_models()  # the models this run loaded, before the next run starts here
    release_memory()
    if result.success:
        return []
    # the user's error (e.g. "events.csv, row 42, column 'event': …") is the cause of
    # Dagster's generic "Error occurred while executing op" wrapper
    return [
        f"{e.step_key}: {_user_error(e.event_specific_data.error)}"
        for e in result.all_events
        if e.is_step_failure
    ] or ["the run failed before any step did (see the Dagster UI's run log)"]


def _raise_on_failure(stage: Stage, tags: dict[str, str], failures: list[str]) -> None:
    if failures:
        raise SystemExit(
            f"stage '{stage.name}' failed ({tags or 'unpartitioned'}):\n" + "\n".join(failures)
        )


# A worker process's Definitions and instance, built once by _start_worker.
_WORKER: dict = {}


class WorkerPool:
    """``workers`` spawned processes for ``run_tasks_in_workers``, each on its share of the
    cores, started ahead of their first run by ``warm``.

    A worker's start (importing Dagster, torch and the definitions) takes 10-16 s at scale 1.0
    on a busy machine. The main job's groups each get fresh workers (``graph_tasks.phases``),
    so as many of the next group's as the current group's tail leaves cores idle are started
    then (the first group's training data builds alone; the models group's second lane ends
    before the first), instead of after the group. Started any earlier, their imports took
    CPU from the runs the group was waiting for: the first group took 64 s instead of 52 s
    at scale 1.0 when both model workers started while the property files were read.
    """

    def __init__(self, workers: int, settings: Settings, instance: DagsterInstance, verbose: bool):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")  # fork would copy this process's threads
        self.workers = workers
        shares, self.hello = context.Queue(), context.Queue()
        for cores in core_shares(workers):
            shares.put(cores)
        self.executor = ProcessPoolExecutor(
            workers,
            mp_context=context,
            initializer=_start_worker,
            initargs=(settings, instance.get_ref(), verbose, shares, self.hello),
        )
        self.warming: list = []  # the warm-up tasks of the workers started ahead of their runs

    def warm(self, count: int | None = None) -> None:
        """Start ``count`` workers now (all by default), before the pool's first run; the others
        start with the first runs that find no idle worker.

        One empty task each, submitted at once: a pool spawns a process for a task that finds
        no idle worker, and none is idle while the first is still starting. Once a worker idles
        it would take such a task itself, so a pool is warmed once, before any run.
        """
        if self.warming:
            raise RuntimeError("a WorkerPool is warmed once, before its first run")
        count = self.workers if count is None else max(1, min(count, self.workers))
        self.warming = [self.executor.submit(_warm_up) for _ in range(count)]

    def processes(self) -> list:
        return list((getattr(self.executor, "_processes", None) or {}).values())


def _warm_up() -> None:
    """A warm-up task: the worker's start (``_start_worker``) is the whole point."""


def run_tasks_in_workers(
    tasks: Sequence,
    run_config: dict,
    workers: int,
    settings: Settings,
    instance: DagsterInstance,
    echo: Callable[[str], None] | None = None,
    only: Iterable[int] | None = None,
    pool: WorkerPool | None = None,
    on_tail: Callable[[int], None] | None = None,
) -> None:
    """Run ``tasks`` (those numbered in ``only``; the others count as done), ``workers`` at a
    time, in spawned
    processes: each task starts once the tasks it comes ``after`` have finished, the best
    ranked first among those that may start.

    Why processes: the torch models train on one thread for minutes (two threads made their
    small ops several times slower on a busy machine), so one run at a time leaves a core
    idle; Dagster runs the steps of one run in one process. The runs write the same DuckDB
    file, which one process at a time may open: the steps hold it only while loading their
    inputs and storing their outputs, and every connection retries while another process
    holds it (``recsys_assets.core.duckdb_retry``). The runs are recorded in the one Dagster
    instance (``DagsterInstance.from_ref``), so the UI shows them like any other. The workers
    live for all the tasks: a process start (importing Dagster, torch and the definitions)
    costs 5-16 s.

    ``pool``: workers made (and perhaps warmed) beforehand, else new ones. ``on_tail(idle)``
    is called once, when ``idle`` workers have nothing they may take until a running run ends
    (the caller starts as many of the next group's workers there, on the cores that would
    idle).
    """
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    from recsys_assets.graph_tasks import ready

    todo = set(range(len(tasks)) if only is None else only)
    if not todo:
        if pool is not None:
            pool.executor.shutdown(wait=True)
        return
    _prepare_shared_stores(settings)
    if pool is None:
        workers = max(1, min(workers, len(todo)))
        pool = WorkerPool(workers, settings, instance, run_config is VERBOSE_RUN_CONFIG)
    workers, hello = pool.workers, pool.hello
    own_cores: dict[int, set[int]] = {}  # worker pid -> its share, as each worker reports it
    finished = False
    outside = set(range(len(tasks))) - todo
    done: set[int] = set(outside)
    started: set[int] = set(outside)
    running: dict = {}  # future -> task number
    widened = False
    try:
        while not todo <= done:
            waiting = ready(tasks, done, started)
            for number in waiting[: workers - len(running)]:
                if widened:  # a worker gets a task again: everyone back to their own cores
                    _drain(hello, own_cores)
                    _pin(own_cores)
                    widened = False
                task = tasks[number]
                # nothing else runs, and nothing else may start until it ends
                alone = not running and len(waiting) == 1
                future = pool.executor.submit(
                    _worker_run, list(task.assets), task.tags, run_config, alone
                )
                running[future] = number
                started.add(number)
            if not running:
                raise RuntimeError(f"tasks {sorted(todo - done)} wait forever")
            if len(running) < workers and not widened:
                # nothing else may start yet: a core would idle, so the running workers get
                # every core (their later fits and scoring read it at the call)
                _give_every_core(pool.processes())
                widened = True
            if on_tail is not None and len(running) < workers:
                # a worker has nothing to take until a running run ends: the group's tail
                on_tail(workers - len(running))
                on_tail = None
            # with a timeout, so that Ctrl-C is seen: a signal that another thread of this
            # process received does not wake a main thread blocked on a lock
            finished_now, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in finished_now:
                number = running.pop(future)
                task = tasks[number]
                try:
                    tags, failures, seconds = future.result()
                except BrokenProcessPool:
                    raise SystemExit(
                        f"run '{task.label}' failed: its worker process died (killed, or out of "
                        "memory: RECSYS_WORKERS=1 runs everything in one process, one run at "
                        "a time)"
                    ) from None
                if failures:
                    raise SystemExit(f"run '{task.label}' failed:\n" + "\n".join(failures))
                done.add(number)
                if echo is not None:
                    echo(f"   {task.label} done in {seconds:.1f} s")
        finished = True
    finally:
        processes = pool.processes()
        # waited for: a worker's memory must be gone before the next group's runs take theirs
        pool.executor.shutdown(wait=finished, cancel_futures=True)
        if not finished:
            _stop_workers(processes)


def _stop_workers(children) -> None:
    """After a failure or Ctrl-C, stop the other runs instead of waiting minutes for them.

    A worker inside a run takes SIGTERM as Dagster's interrupt: the run is recorded as failed
    and the worker goes back to waiting for work, where a second SIGTERM ends it quietly
    (``_leave_quietly``). One that is still there after that is killed, so the main job never
    waits on a worker at exit.
    """
    for _ in range(2):
        for child in children:
            if child.is_alive():
                child.terminate()
        for child in children:
            child.join(timeout=10)
    for child in children:
        if child.is_alive():
            child.kill()
            child.join(timeout=5)


def _drain(hello, own_cores: dict[int, set[int]]) -> None:
    import queue

    while True:
        try:
            pid, cores = hello.get_nowait()
        except queue.Empty:
            return
        own_cores[pid] = set(cores)


def _pin(own_cores: dict[int, set[int]]) -> None:
    for pid, cores in own_cores.items():
        if cores:
            try:
                os.sched_setaffinity(pid, cores)
            except OSError:  # exited meanwhile
                pass


def _give_every_core(processes) -> None:
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if cores:
        _pin({process.pid: cores for process in processes})


def core_shares(workers: int) -> list[set[int]]:
    """This process's cores split between ``workers`` (round robin; a core may be shared when
    there are more workers than cores)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cores:
        return [set() for _ in range(workers)]
    return [set(cores[i::workers]) or {cores[i % len(cores)]} for i in range(workers)]


def _start_worker(settings: Settings, instance_ref, verbose: bool, shares, hello) -> None:
    """Build the Definitions and open the instance once per worker, on its own share of the
    cores: every library then sizes its thread pool to that share (torch's products, implicit's
    and the BLAS's OpenMP, polars), so two workers never run four threads on two cores (two
    threads on a core another process keeps busy made the torch models' scoring 3-4x slower)."""
    import queue
    import signal

    # Ctrl-C (it reaches the whole process group) or the main process stopping the workers
    # after a failure: an idle worker leaves at once, instead of printing the KeyboardInterrupt
    # traceback of a process waiting for work above the user's error. Dagster maps SIGTERM to
    # the SIGINT handler after each run, and inside a run handles both itself.
    signal.signal(signal.SIGINT, _leave_quietly)
    signal.signal(signal.SIGTERM, _leave_quietly)
    _WORKER["all_cores"] = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    try:
        cores = shares.get(timeout=5)
    except queue.Empty:  # more workers than shares (one replaced): the process's own cores
        cores = set()
    if cores:
        try:
            os.sched_setaffinity(0, cores)
        except OSError:  # a sandbox that refuses it: the threads still follow the variables
            pass
        # before any of them is loaded: they read these when they start their thread pools.
        # The BLAS's threads spin while they wait, so two of them on one core crawl: one per
        # core of the share (a run that starts alone gets more, _worker_run). The runs that
        # run alone for long (the Hybrid, the bundle) are in a group of one worker on every
        # core (graph_tasks.phases), so polars' pool, sized once, follows the share too.
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(len(cores))
        os.environ["POLARS_MAX_THREADS"] = str(len(cores))
    hello.put((os.getpid(), sorted(cores)))  # so the main process can pin it back after widening
    if not verbose:
        from recsys_assets.terminal import quiet_libraries

        quiet_libraries()
    from recsys_assets.definitions import build_definitions

    _WORKER["defs"] = build_definitions(settings)
    _WORKER["instance"] = DagsterInstance.from_ref(instance_ref)


def _drop_outputs(result) -> None:
    """Let go of every output value of a finished in-process run.

    ``execute_in_process`` keeps each step's output in the result (for ``output_value``), and
    a step context of the run stays reachable from Dagster's module state after the run ends,
    holding that same dict: a process kept the last run's models and frames alive into the
    next run (1.2 GB after the Hybrid's run at scale 1.0, where the worker then built the
    serving bundle and the reports on top). Nothing here reads the outputs back: they are in the
    warehouse and the model store. Where a Dagster release keeps them elsewhere this does
    nothing (``tests/test_pipeline.py`` checks that the models are gone)."""
    capture = getattr(result, "_output_capture", None)
    if isinstance(capture, dict):
        capture.clear()


def _leave_quietly(signum, frame) -> None:
    os._exit(128 + signum)


def _worker_run(
    assets: list[AssetKey], tags: dict[str, str], run_config: dict, alone: bool = False
):
    """One run in this worker: (tags, failures, seconds).

    The main process sets the worker's cores (its share, or every core while the other
    workers idle). A run that starts ``alone`` (nothing else runs or may start before it ends:
    the Hybrid, the last reports) also gets a BLAS thread per core for its duration.
    """
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    cores = len(_WORKER.get("all_cores") or ())
    limits = threadpool_limits(cores, user_api="blas") if alone and cores > 1 else nullcontext()
    start = time.perf_counter()
    with limits:
        failures = _execute_run(_WORKER["defs"], _WORKER["instance"], assets, tags, run_config)
    return tags, failures, time.perf_counter() - start


def _prepare_shared_stores(settings: Settings) -> None:
    """Create the MLflow store before several processes first open it at once (each would
    create its tables and the experiment, and all but one would fail on the others')."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    if mlflow.get_experiment_by_name(MLFLOW_EXPERIMENT) is None:
        mlflow.create_experiment(MLFLOW_EXPERIMENT)


def release_memory() -> None:
    """Give the memory of a finished run back to the system before the next one starts.

    A process runs one Dagster run after another (this one with ``RECSYS_WORKERS=1``, each
    worker otherwise). Without this, the heap that one model's run grew (torch and numpy
    buffers freed into glibc's arenas) can stay mapped, and the next model's run then starts
    on top of it (scale 1.0 reached 10.2 GB of RSS in the
    GRU4Rec run, the fifth model's).
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


def prepare_raw_data(defs: Definitions, instance: DagsterInstance) -> Path:
    """Check (or generate) the raw files and register the days of events; nothing else."""
    from recsys_assets.core.data.retailrocket import RetailRocketFormatError
    from recsys_assets.partitions import register_event_days
    from recsys_assets.resources import RawFilesMissingError

    source = defs.resources["source"]
    try:
        raw = source.ensure()
        # reads events.csv for its days: a broken file stops here, before any run, with the
        # error naming file, row and column (not a traceback)
        register_event_days(instance, source)
    except (RawFilesMissingError, RetailRocketFormatError) as error:
        raise SystemExit(str(error)) from None
    return raw


def run_all(
    defs: Definitions,
    instance: DagsterInstance,
    only: Sequence[str] | None = None,
    run_config: dict | None = None,
    echo: Callable[[str], None] = lambda line: print(line, flush=True),
    settings: Settings | None = None,
) -> None:
    """Prepare the raw data, then run every stage (or those naming an asset in ``only``).

    ``settings`` (those ``defs`` were built from) lets the model partitions run side by side,
    ``settings.workers`` at a time; without them every run executes in this process.
    """
    raw = prepare_raw_data(defs, instance)
    echo(f"raw files: {raw}")
    stages = [
        stage
        for stage in plan_stages(defs)
        if not only or {key.to_user_string() for key in stage.assets} & set(only)
    ]
    workers = settings.workers if settings else 1
    config = run_config if run_config is not None else QUIET_RUN_CONFIG
    if workers > 1 and instance.is_persistent:
        from recsys_assets.graph_tasks import phases, plan_tasks

        tasks = plan_tasks(defs, instance, stages)
        groups = phases(tasks)
        verbose = config is VERBOSE_RUN_CONFIG

        def pool_for(index: int) -> WorkerPool:
            _, members, side_by_side = groups[index]
            at_once = min(workers if side_by_side else 1, len(members))
            return WorkerPool(at_once, settings, instance, verbose)

        pools = [pool_for(0)] if groups else []
        completed = False
        try:
            for index, (name, members, _) in enumerate(groups):
                pool = pools[index]
                echo(f"== {name}: {len(members)} runs, {pool.workers} at a time")
                start = time.perf_counter()

                def warm_next(idle: int | None = None, index: int = index) -> None:
                    # the next group's workers start on the cores this group's tail leaves idle
                    if index + 1 < len(groups):
                        if len(pools) == index + 1:
                            pools.append(pool_for(index + 1))
                        pools[index + 1].warm(idle)

                run_tasks_in_workers(
                    tasks,
                    config,
                    pool.workers,
                    settings,
                    instance,
                    echo,
                    members,
                    pool,
                    on_tail=warm_next,
                )
                if len(pools) == index + 1:
                    warm_next()  # (the group had no tail: one run at a time)
                echo(f"   done in {time.perf_counter() - start:.1f} s")
            completed = True
        finally:
            if not completed:  # a failure or Ctrl-C: the next group's warm workers go too
                for pool in pools:
                    processes = pool.processes()
                    pool.executor.shutdown(wait=False, cancel_futures=True)
                    _stop_workers(processes)
        return
    for stage in stages:
        echo(f"== {stage.name}")
        seconds = run_stage(defs, instance, stage, run_config=config)
        echo(f"   stage done in {seconds:.1f} s")


def _user_error(error) -> str:
    """The cause's message: Dagster wraps it in a generic "Error occurred while executing op"."""
    return (error.cause or error).message.strip()


def _default_dagster_home(data_dir: Path) -> None:
    """When DAGSTER_HOME is unset, use ``data_dir/dagster_home`` with our dagster.yaml, as make.

    A DAGSTER_HOME that is set but does not exist yet is created the same way: Dagster itself
    would stop with a traceback, and a new folder is what the user evidently wants.
    """
    home = Path(os.environ.get("DAGSTER_HOME") or data_dir / "dagster_home").expanduser()
    if os.environ.get("DAGSTER_HOME") and home.is_dir():
        return
    home.mkdir(parents=True, exist_ok=True)
    config = Path(__file__).resolve().parents[1] / "dagster.yaml"
    if config.is_file() and not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").symlink_to(config)
    os.environ["DAGSTER_HOME"] = str(home)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run only the stages holding these assets")
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=os.environ.get("RECSYS_VERBOSE", "") not in ("", "0"),
        help="Dagster's full console log and the libraries' warnings (also RECSYS_VERBOSE=1)",
    )
    args = parser.parse_args(argv)
    if not args.verbose:
        from recsys_assets.terminal import quiet_libraries

        quiet_libraries()

    from recsys_assets.definitions import build_definitions
    from recsys_assets.settings import Settings

    settings = Settings.from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _default_dagster_home(settings.data_dir)
    defs = build_definitions(settings)
    instance = DagsterInstance.get()
    run_config = VERBOSE_RUN_CONFIG if args.verbose else QUIET_RUN_CONFIG
    run_all(defs, instance, args.only, run_config, settings=settings)
    print_leaderboard(defs)
    return 0


def print_leaderboard(defs) -> None:
    """Show the seed's results table once the models have been scored."""
    import duckdb
    import polars as pl

    from recsys_assets.defs.models.assets import LEADERBOARD_COLUMNS

    database = defs.resources["warehouse"].database
    with duckdb.connect(database) as con:
        try:
            # .pl(), not .arrow(): duckdb 1.5's arrow reader of an empty result has no batch and
            # polars cannot build a frame from it (an empty table is stored since empty frames are)
            table = con.sql("select * from recsys.leaderboard").pl()
        except duckdb.CatalogException:
            return
    if table.is_empty():
        print("\nLeaderboard: no model was scored")
        return
    cols = ["model", *[c for c in LEADERBOARD_COLUMNS if c in table.columns]]
    with pl.Config(tbl_rows=20, tbl_cols=12, float_precision=4, tbl_hide_dataframe_shape=True):
        print("\nLeaderboard (test split, top-K over the full catalogue):")
        print(
            table.select(cols).rename({k: v for k, v in LEADERBOARD_COLUMNS.items() if k in cols})
        )


if __name__ == "__main__":
    sys.exit(main())
