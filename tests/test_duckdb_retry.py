"""A warehouse connection waits while another process holds the DuckDB file (models trained
side by side take turns at it) and fails clearly when the wait runs out."""

from __future__ import annotations

import subprocess
import sys
import time

import duckdb
import polars as pl
import pytest

from recsys_assets.core.duckdb_retry import connect, is_lock_conflict

HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("create table if not exists t (x integer)")
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("insert into t values (1)")
con.close()
"""


def _hold(path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_a_connection_waits_for_the_process_holding_the_file(tmp_path):
    path = tmp_path / "w.duckdb"
    holder = _hold(path, 1.5)
    start = time.monotonic()
    with connect(str(path)) as con:
        waited = time.monotonic() - start
        # the holder's write, made just before it let go, is there
        assert con.execute("select count(*) from t").fetchone()[0] == 1
    holder.wait(timeout=10)
    assert waited > 0.5


def test_the_lock_conflict_is_raised_when_the_wait_runs_out(tmp_path):
    path = tmp_path / "w.duckdb"
    holder = _hold(path, 5)
    try:
        with pytest.raises(duckdb.IOException) as raised:
            connect(str(path), wait_seconds=0.3)
        assert is_lock_conflict(raised.value)
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_other_errors_are_raised_at_once(tmp_path):
    start = time.monotonic()
    with pytest.raises(duckdb.IOException) as raised:
        connect(str(tmp_path / "no-such-folder" / "w.duckdb"))
    assert not is_lock_conflict(raised.value)
    assert time.monotonic() - start < 5


def test_the_warehouse_io_manager_waits_with_short_pauses_and_writes(tmp_path):
    """Assets store and load tables through the IO manager while another process holds the
    file: the step waits (pauses of at most 0.5 s, not dagster-duckdb's doubling ones) and its
    table is written once the file is free."""
    from dagster import asset, materialize

    from recsys_assets.io_managers import WarehouseIOManager

    path = tmp_path / "w.duckdb"

    @asset
    def small_table() -> pl.DataFrame:
        return pl.DataFrame({"x": [1, 2, 3]})

    holder = _hold(path, 3.5)
    start = time.monotonic()
    result = materialize(
        [small_table],
        resources={"io_manager": WarehouseIOManager(database=str(path), schema="recsys")},
    )
    waited = time.monotonic() - start
    holder.wait(timeout=10)
    assert result.success
    # dagster-duckdb's own backoff would first try again at 0.1+0.2+...+3.2 = 6.3 s
    assert 3.0 < waited < 6.0, waited
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("select sum(x) from recsys.small_table").fetchone()[0] == 6
        assert con.execute("select count(*) from t").fetchone()[0] == 1
