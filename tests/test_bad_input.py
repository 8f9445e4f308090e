"""A bad raw file stops the run with file/row/column named, and stored tables stay as they were."""

from __future__ import annotations

import shutil
from dataclasses import replace

import duckdb
from dagster import AssetKey, DagsterInstance


def test_bad_events_file_fails_the_run_and_keeps_stored_days(tmp_path, small_raw_dir):
    from recsys_assets.definitions import build_definitions
    from recsys_assets.partitions import partition_range_tags, register_event_days
    from recsys_assets.settings import Settings

    raw = tmp_path / "raw"
    shutil.copytree(small_raw_dir, raw)
    settings = replace(
        Settings.from_env(),
        data_dir=tmp_path,
        raw_dir=raw,
        raw_dir_is_default=False,
        duckdb_path=tmp_path / "w.duckdb",
    )
    defs = build_definitions(settings)
    job = defs.resolve_implicit_global_asset_job_def()
    days = partition_range_tags("2015-06-01", "2015-06-07")
    with DagsterInstance.ephemeral() as instance:
        register_event_days(instance, defs.resources["source"])
        ok = job.execute_in_process(
            instance=instance, asset_selection=[AssetKey("raw_events")], tags=days
        )
        assert ok.success
        with duckdb.connect(str(settings.duckdb_path)) as con:
            before = con.sql("select count(*), sum(visitorid) from recsys.raw_events").fetchone()
        assert before[0] > 0

        lines = (raw / "events.csv").read_text().splitlines()
        fields = lines[41].split(",")
        fields[2] = "purchase"  # an unknown event type on line 42 of the file
        lines[41] = ",".join(fields)
        (raw / "events.csv").write_text("\n".join(lines) + "\n")

        bad = job.execute_in_process(
            instance=instance,
            asset_selection=[AssetKey("raw_events")],
            tags=days,
            raise_on_error=False,
        )
        assert not bad.success
        message = next(e for e in bad.all_events if e.is_step_failure).event_specific_data
        text = str(message.error.cause.message if message.error.cause else message.error.message)
        assert "events.csv" in text and "row 42" in text and "'event'" in text, text
        with duckdb.connect(str(settings.duckdb_path)) as con:
            after = con.sql("select count(*), sum(visitorid) from recsys.raw_events").fetchone()
        assert after == before
