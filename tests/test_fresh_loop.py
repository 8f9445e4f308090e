"""The graph keeps itself fresh: a new day of events in the raw folder ends up served.

A first full run publishes version 1 (the main job, quick model parameters, scale 0.01). Then a
new day is appended to ``events.csv`` and, with no other action, the raw-folder sensors and the
automation conditions are evaluated tick by tick (what the daemon does under ``make dev``), each
requested run executed in-process, until nothing more is asked for. Redis then holds a new
version, trained on the new day, that the Litestar app serves.
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import replace

import dagster as dg
import pytest
from automation_ticks import in_process_executor, settle, times_requested
from recsys_fresh_data import append_day

pytestmark = pytest.mark.slow  # two runs of the whole graph (see the timing printed)


def _published(r, prefix):
    from recsys_serving.redis_layout.keys import Keys

    current = r.get(Keys(prefix).current)
    return current.decode() if current else None


def _sensor_runs(defs, instance, sensor, cursor, job):
    """Evaluate one raw-folder sensor; apply its partitions and execute its runs."""
    from recsys_assets.tracking import end_active_mlflow_run

    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"source": defs.resources["source"]},
        definitions=defs,
    )
    result = sensor(context)
    if isinstance(result, dg.SkipReason):
        return cursor, 0
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
    for request in result.run_requests:
        outcome = job.execute_in_process(
            instance=instance,
            asset_selection=list(request.asset_selection or [dg.AssetKey("raw_events")]),
            tags=request.tags,
            run_config=quick_run_config(),
        )
        end_active_mlflow_run()
        assert outcome.success
    return result.cursor, len(result.run_requests)


def quick_run_config():
    from quick_models import quick_run_config as config

    return config()


def test_new_day_in_raw_folder_is_served(small_raw_dir, pipeline_settings, tmp_path, r):
    from litestar.testing import TestClient

    from recsys_assets.definitions import build_definitions
    from recsys_assets.defs.ingestion.sensors import catalog_files_sensor, events_file_sensor
    from recsys_assets.pipeline import run_all
    from recsys_serving.app import create_app
    from recsys_serving.redis_layout import delete_prefix
    from recsys_serving.settings import Settings as ServingSettings

    raw = tmp_path / "raw"
    shutil.copytree(small_raw_dir, raw)
    settings = replace(
        pipeline_settings,
        data_dir=tmp_path,
        raw_dir=raw,
        duckdb_path=tmp_path / "warehouse.duckdb",
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        redis_prefix=f"recsys-fresh-{uuid.uuid4().hex[:8]}",
    )
    defs = build_definitions(settings)
    job = defs.resolve_implicit_global_asset_job_def()
    try:
        with dg.instance_for_test() as instance:
            execute = in_process_executor(defs, instance, run_config=quick_run_config())
            start = time.perf_counter()
            run_all(defs, instance, run_config=quick_run_config(), echo=lambda line: None)
            first_run = time.perf_counter() - start
            before = _published(r, settings.redis_prefix)
            assert before is not None

            # the daemon's first looks: nothing changed since the main job loaded everything
            events_cursor, n = _sensor_runs(defs, instance, events_file_sensor, None, job)
            catalog_cursor, m = _sensor_runs(defs, instance, catalog_files_sensor, None, job)
            ticks, cursor = settle(defs, instance, execute)
            assert (n, m, ticks) == (0, 0, [])

            new_day = append_day(raw / "events.csv")
            start = time.perf_counter()
            events_cursor, n = _sensor_runs(defs, instance, events_file_sensor, events_cursor, job)
            catalog_cursor, m = _sensor_runs(
                defs, instance, catalog_files_sensor, catalog_cursor, job
            )
            ticks, cursor = settle(defs, instance, execute, cursor)
            loop = time.perf_counter() - start
            print(
                f"\nfirst run {first_run:.1f} s; new day {new_day}: sensor runs {n}+{m}, "
                f"{len(ticks)} automation ticks "
                f"({', '.join(f'{t.count} in {len(t.runs)} runs' for t in ticks)}), "
                f"loop {loop:.1f} s"
            )
            assert (n, m) == (1, 0)
            assert max(times_requested(ticks).values()) == 1
            after = _published(r, settings.redis_prefix)
            assert after is not None and after != before

            app = create_app(
                ServingSettings(
                    redis_url=settings.redis_url,
                    prefix=settings.redis_prefix,
                    listen_pubsub=False,
                )
            )
            with TestClient(app) as client:
                health = client.get("/api/v1/health").json()
                assert health["version"] == after
                body = client.get("/api/v1/models").json()
                assert body["version"] == after
            with defs.resources["warehouse"].get_connection() as con:
                (last,) = con.execute(
                    "select max(cast(epoch_ms(timestamp) as date))::varchar from recsys.splits"
                ).fetchone()
            assert last == new_day
    finally:
        delete_prefix(r, settings.redis_prefix)
