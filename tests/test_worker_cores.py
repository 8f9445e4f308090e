"""Worker processes of the main job: their share of the cores, and thread counts that follow
the affinity mask at each call (so a worker given every core at the end of a wave uses them)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from recsys_assets.pipeline import core_shares

linux_only = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux affinity")


@linux_only
def test_core_shares_split_this_process_cores():
    cores = sorted(os.sched_getaffinity(0))
    shares = core_shares(len(cores))
    assert [sorted(s) for s in shares] == [[c] for c in cores]
    assert core_shares(1) == [set(cores)]
    # more workers than cores: every worker still gets a core, some share one
    many = core_shares(len(cores) + 1)
    assert len(many) == len(cores) + 1 and all(len(s) == 1 for s in many)
    assert set().union(*many) == set(cores)


@linux_only
def test_thread_counts_follow_the_affinity_at_each_call():
    """In a process pinned to one core, 0 threads means 1; widened again, it means all."""
    script = """
import os
from recsys_assets.core.cpu import available_cores, resolve_threads
every = os.sched_getaffinity(0)
os.sched_setaffinity(0, {min(every)})
one = (available_cores(), resolve_threads(0), resolve_threads(3))
os.sched_setaffinity(0, every)
print(*one, available_cores(), resolve_threads(0), len(every))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    one_cores, one_zero, explicit, all_cores, all_zero, every = map(int, out)
    assert (one_cores, one_zero, explicit) == (1, 1, 3)
    assert all_cores == all_zero == every


def test_a_pool_warms_only_the_workers_asked_for_and_runs_on_them(tmp_path):
    """``WorkerPool.warm(n)`` starts n workers ahead of their first run (the main job starts
    the next group's workers on the cores the current group's tail leaves idle); the rest
    start with their first runs, and a run takes the idle warm worker."""
    from dataclasses import replace

    from dagster import instance_for_test

    from recsys_assets.pipeline import WorkerPool
    from recsys_assets.settings import Settings

    settings = replace(Settings.from_env(), data_dir=tmp_path, duckdb_path=tmp_path / "w.duckdb")
    with instance_for_test() as instance:
        pool = WorkerPool(2, settings, instance, verbose=False)
        try:
            pool.warm(1)
            assert len(pool.warming) == 1
            pool.warming[0].result(timeout=120)  # its initializer ran, then the empty task
            pid, _ = pool.hello.get(timeout=5)
            assert [p.pid for p in pool.processes()] == [pid]
            # a run now goes to the idle warm worker at once
            assert pool.executor.submit(os.getpid).result(timeout=60) == pid
            with pytest.raises(RuntimeError, match="warmed once"):
                pool.warm()
        finally:
            pool.executor.shutdown(wait=True, cancel_futures=True)
        pool = WorkerPool(2, settings, instance, verbose=False)
        try:
            pool.warm()  # every worker, before any has started
            for future in pool.warming:
                future.result(timeout=120)
            assert len({pool.hello.get(timeout=5)[0] for _ in range(2)}) == 2
            assert len(pool.processes()) == 2
        finally:
            pool.executor.shutdown(wait=True, cancel_futures=True)
