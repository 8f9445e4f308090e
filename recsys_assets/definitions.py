"""The Dagster code location: every asset, resource, job, schedule and sensor of recsys."""

from __future__ import annotations

from dagster import Definitions, load_assets_from_modules
from dagster_duckdb import DuckDBResource
from dagster_duckdb_polars import DuckDBPolarsIOManager
from dagster_mlflow import mlflow_tracking

from recsys_assets.assets import analytics, ingestion, interactions, models, serving
from recsys_assets.automation import jobs, schedules, sensors
from recsys_assets.io_managers import ModelStoreIOManager
from recsys_assets.resources import ModelStoreResource, RedisResource, RetailRocketSource
from recsys_assets.settings import DUCKDB_SCHEMA, Settings


def build_definitions(settings: Settings | None = None) -> Definitions:
    """Build the Definitions for one environment (tests pass their own temporary settings)."""
    settings = settings or Settings.from_env()
    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    database = str(settings.duckdb_path)
    return Definitions(
        assets=load_assets_from_modules([ingestion, interactions, analytics, models, serving]),
        resources={
            "io_manager": DuckDBPolarsIOManager(database=database, schema=DUCKDB_SCHEMA),
            "model_io_manager": ModelStoreIOManager(database=database, schema_name=DUCKDB_SCHEMA),
            "model_store": ModelStoreResource(database=database, schema_name=DUCKDB_SCHEMA),
            "warehouse": DuckDBResource(database=database),
            "redis": RedisResource(url=settings.redis_url, prefix=settings.redis_prefix),
            "mlflow": mlflow_tracking.configured(
                {
                    "experiment_name": "recsys",
                    "mlflow_tracking_uri": settings.mlflow_tracking_uri,
                }
            ),
            "source": RetailRocketSource(
                raw_dir=str(settings.raw_dir), scale=settings.demo_scale, seed=settings.seed
            ),
        },
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
    )


defs = build_definitions()
