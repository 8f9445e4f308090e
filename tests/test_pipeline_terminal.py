"""The main job's terminal (issue 7 §7): only the project's own lines unless --verbose.

``python -m recsys_assets.pipeline`` runs in a subprocess on a tiny data set, as ``make run``
does. Before, it printed 17 DeprecationWarning lines of dagster-mlflow, MLflow's INFO lines, and
nothing at all while a step ran.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).parents[1]


def _main_job(tmp_path, raw, timeout: float, **env) -> subprocess.CompletedProcess:
    """``python -m recsys_assets.pipeline`` on ``raw`` into ``tmp_path/data``, as a user's shell
    would run it: none of the suite's RECSYS_/DAGSTER_/MLFLOW_ variables, plus ``env``."""
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "DAGSTER_", "MLFLOW_"))
    }
    clean.update(RECSYS_DATA_DIR=str(tmp_path / "data"), RECSYS_RAW_DIR=str(raw), **env)
    return subprocess.run(
        [sys.executable, "-m", "recsys_assets.pipeline"],
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_main_job_prints_steps_and_progress_but_no_library_chatter(
    tmp_path, small_raw_dir, pipeline_redis_url
):
    import redis
    from dagster import StaticPartitionsDefinition

    from recsys_assets.definitions import build_definitions
    from recsys_assets.pipeline import plan_stages
    from recsys_serving.redis_layout import delete_prefix

    prefix = f"recsys-test-terminal-{uuid.uuid4().hex[:8]}"
    try:
        done = _main_job(
            tmp_path,
            small_raw_dir,
            900,
            REDIS_URL=pipeline_redis_url,
            RECSYS_REDIS_PREFIX=prefix,
            PYTHONWARNINGS="default",  # warnings on, as a user's shell may have them
        )
    finally:
        client = redis.Redis.from_url(pipeline_redis_url)
        delete_prefix(client, prefix)
        client.close()
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "DeprecationWarning" not in out and "Warning:" not in out, out[:4000]
    assert not re.search(r"INFO mlflow|alembic", out), out[:4000]
    # Dagster's own event chatter stays in the event log
    for chatter in ("STEP_OUTPUT", "ASSET_MATERIALIZATION", "HANDLED_OUTPUT", "Loading file"):
        assert chatter not in out

    stages = plan_stages(build_definitions())
    for stage in stages:
        keys = [""]
        if isinstance(stage.partitions_def, StaticPartitionsDefinition):
            keys = [f" [{k}]" for k in stage.partitions_def.get_partition_keys()]
        for asset in stage.assets:
            name = asset.to_user_string()
            if stage.single_run:  # one run over the file's days: "[first..last]"
                assert re.search(rf"^  > {name} \[\S+\.\.\S+\] started$", out, re.M), name
                assert re.search(rf"^  < {name} \[\S+\] done in \d+\.\d s$", out, re.M), name
                continue
            for key in keys:
                label = re.escape(f"{name}{key}")
                assert re.search(rf"^  > {label} started$", out, re.M), label
                assert re.search(rf"^  < {label} done in \d+\.\d s$", out, re.M), label
    # progress inside steps: asset context.log lines and recsys_assets.* loggers (dagster.yaml)
    assert re.search(r"^    trained_model \[als\]: ", out, re.M), out[:4000]
    assert "Leaderboard" in out


def test_leaderboard_printing_handles_an_empty_and_a_filled_table(tmp_path, capsys):
    """Empty frames are stored as empty tables, so the leaderboard may exist with no row."""
    from types import SimpleNamespace

    import duckdb

    from recsys_assets.pipeline import print_leaderboard

    db = str(tmp_path / "w.duckdb")
    defs = SimpleNamespace(resources={"warehouse": SimpleNamespace(database=db)})
    print_leaderboard(defs)  # no table at all: nothing to say
    assert capsys.readouterr().out == ""
    with duckdb.connect(db) as con:
        con.execute("create schema recsys")
        con.execute("create table recsys.leaderboard (model varchar, ndcg_at_10 double)")
    print_leaderboard(defs)
    assert "no model was scored" in capsys.readouterr().out
    with duckdb.connect(db) as con:
        con.execute("insert into recsys.leaderboard values ('als', 0.0419)")
    print_leaderboard(defs)
    out = capsys.readouterr().out
    assert "NDCG@10" in out and "als" in out and "0.0419" in out


def test_a_broken_file_ends_the_main_job_with_its_error_and_no_traceback(tmp_path, small_raw_dir):
    """With two workers, the run that fails names file, row and column; the other worker is
    stopped (it may be inside a run, or idle) without a KeyboardInterrupt traceback, and the
    main job exits instead of waiting on it."""
    import shutil

    raw = tmp_path / "raw"
    shutil.copytree(small_raw_dir, raw)
    path = raw / "item_properties_part1.csv"
    lines = path.read_text().splitlines()
    fields = lines[5].split(",")
    fields[0] = "notatime"
    lines[5] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    done = _main_job(
        tmp_path,
        raw,
        300,
        RECSYS_WORKERS="2",
        RECSYS_REDIS_PREFIX=f"recsys-test-broken-{uuid.uuid4().hex[:8]}",
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out[-4000:]
    assert (
        "item_properties_part1.csv, row 6, column 'timestamp': 'notatime' is not a Unix "
        "timestamp in milliseconds" in out
    ), out[-4000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-4000:]


def test_a_broken_events_file_stops_the_main_job_before_any_run_without_a_traceback(
    tmp_path, small_raw_dir
):
    """The event days are registered from events.csv before the first run: a bad event type
    there ends the main job with file, row and column, as a bad file inside a run does."""
    import shutil

    raw = tmp_path / "raw"
    shutil.copytree(small_raw_dir, raw)
    path = raw / "events.csv"
    lines = path.read_text().splitlines()
    fields = lines[9].split(",")
    fields[2] = "click"
    lines[9] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    done = _main_job(
        tmp_path, raw, 300, RECSYS_REDIS_PREFIX=f"recsys-test-events-{uuid.uuid4().hex[:8]}"
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out[-4000:]
    assert "events.csv, row 10, column 'event': 'click' is not an event type" in out, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
