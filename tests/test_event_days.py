"""No event is dropped in silence (issue 7 §2): the days of raw_events come from the data.

Before, raw_events kept only the rows inside RECSYS_PARTITION_START/_END (2015-05-03 ..
2015-09-19) and dropped the rest without an error: a data set from 1998 or 2021 loaded nothing.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import duckdb
import pytest
from dagster import AssetKey, DagsterInstance

from recsys_assets.core.data.retailrocket import read_events
from recsys_assets.core.generator import GeneratorConfig, generate_dataset


def _dataset(folder: Path, start: str, end: str, duplicates: int) -> Path:
    generate_dataset(folder, GeneratorConfig(scale=0.002, seed=11, start=start, end=end))
    events = folder / "events.csv"
    lines = events.read_text().splitlines()
    events.write_text("\n".join([*lines, *lines[1 : 1 + duplicates]]) + "\n")  # exact repeats
    return folder


def _defs(tmp_path: Path, raw: Path):
    from recsys_assets.definitions import build_definitions
    from recsys_assets.settings import Settings

    settings = replace(
        Settings.from_env(),
        data_dir=tmp_path,
        raw_dir=raw,
        raw_dir_is_default=False,
        duckdb_path=tmp_path / "warehouse.duckdb",
    )
    return settings, build_definitions(settings)


def _stored(settings) -> tuple[int, str, str]:
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        return con.sql(
            'select count(*), min(cast(epoch_ms("timestamp") as date))::varchar, '
            'max(cast(epoch_ms("timestamp") as date))::varchar from recsys.raw_events'
        ).fetchone()


def _metadata(instance, key="raw_events"):
    event = instance.get_latest_materialization_event(AssetKey(key))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    base = tmp_path_factory.mktemp("periods")
    return (
        _dataset(base / "1998", "1998-01-01", "1998-02-28", duplicates=3),
        _dataset(base / "2021", "2021-11-01", "2021-12-31", duplicates=0),
    )


def test_data_of_any_period_is_loaded_whole(tmp_path, datasets):
    from recsys_assets.pipeline import run_all

    old, new = datasets
    settings, defs = _defs(tmp_path, old)
    with DagsterInstance.ephemeral() as instance:
        run_all(defs, instance, only=["raw_events"], echo=lambda line: None)
        events, report = read_events(old / "events.csv")
        assert report.duplicates_dropped == 3
        assert _stored(settings) == (report.rows_read - 3, "1998-01-01", "1998-02-28")
        meta = _metadata(instance)
        assert meta["file_rows"] == report.rows_read
        assert meta["rows_loaded"] == events.height
        assert meta["not_loaded_duplicates"] == 3
        assert meta["not_loaded_outside_materialised_days"] == 0
        assert meta["rows_not_loaded"] == 3

        # Another period in the same warehouse: the table then holds exactly the new file (the
        # days of the old one, still registered, are rewritten empty rather than left behind).
        settings, defs = _defs(tmp_path, new)
        run_all(defs, instance, only=["raw_events"], echo=lambda line: None)
        events, report = read_events(new / "events.csv")
        assert _stored(settings) == (events.height, "2021-11-01", "2021-12-31")
        assert _metadata(instance)["days_without_events"] == 59  # Jan + Feb 1998


def test_rows_outside_the_materialised_days_are_counted(tmp_path, datasets):
    from recsys_assets.partitions import partition_range_tags, register_event_days

    old, _ = datasets
    settings, defs = _defs(tmp_path, old)
    job = defs.resolve_implicit_global_asset_job_def()
    with DagsterInstance.ephemeral() as instance:
        days = register_event_days(instance, defs.resources["source"])
        assert days[0] == "1998-01-01" and days[-1] == "1998-02-28" and len(days) == 59
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[AssetKey("raw_events")],
            tags=partition_range_tags("1998-01-01", "1998-01-31"),
        )
        assert result.success
        events, _ = read_events(old / "events.csv")
        stored = _stored(settings)
        assert stored[1:] == ("1998-01-01", "1998-01-31")
        meta = _metadata(instance)
        assert meta["rows_loaded"] == stored[0]
        assert meta["not_loaded_outside_materialised_days"] == events.height - stored[0] > 0
        warnings = [
            r.user_message
            for r in instance.all_logs(result.run_id)
            if r.level >= 30 and "were not loaded" in r.user_message
        ]
        assert len(warnings) == 1


def test_events_file_sensor_registers_days_and_requests_one_run(tmp_path, datasets):
    from dagster import build_sensor_context

    from recsys_assets.defs.ingestion.sensors import events_file_sensor
    from recsys_assets.partitions import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG

    old, _ = datasets
    _, defs = _defs(tmp_path, old)
    with DagsterInstance.ephemeral() as instance:
        context = build_sensor_context(
            instance=instance, resources={"source": defs.resources["source"]}
        )
        result = events_file_sensor(context)
        (request,) = result.run_requests
        assert request.tags[PARTITION_RANGE_START_TAG] == "1998-01-01"
        assert request.tags[PARTITION_RANGE_END_TAG] == "1998-02-28"
        (added,) = result.dynamic_partitions_requests
        assert len(added.partition_keys) == 59
