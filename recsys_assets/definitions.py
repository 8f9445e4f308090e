"""The Dagster code location: every asset, resource, job, schedule and sensor of recsys.

``defs`` is built lazily (``@dagster.definitions``): importing this module reads no
environment variable and creates no folder; Dagster's tools call it when they load the code
location, and the main job and the tests call ``build_definitions`` with their own settings.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster import Definitions, load_assets_from_modules
from dagster_duckdb import DuckDBResource
from dagster_duckdb_polars import DuckDBPolarsIOManager
from dagster_mlflow import mlflow_tracking

from recsys_assets.assets import analytics, ingestion, interactions, models, serving
from recsys_assets.automation import jobs, schedules, sensors
from recsys_assets.io_managers import ModelStoreIOManager
from recsys_assets.resources import ModelStoreResource, RedisResource, RetailRocketSource
from recsys_assets.settings import DUCKDB_SCHEMA, Settings
from recsys_assets.terminal import progress_logger


class WarehouseIOManager(DuckDBPolarsIOManager):
    """The DuckDB/polars IO manager, creating the warehouse's folder when a run first needs it."""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        super().setup_for_execution(context)


def build_definitions(settings: Settings | None = None) -> Definitions:
    """Build the Definitions for one environment (tests pass their own temporary settings)."""
    settings = settings or Settings.from_env()
    database = str(settings.duckdb_path)
    return Definitions(
        assets=load_assets_from_modules([ingestion, interactions, analytics, models, serving]),
        resources={
            "io_manager": WarehouseIOManager(database=database, schema=DUCKDB_SCHEMA),
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
                raw_dir=str(settings.raw_dir),
                generate_if_missing=settings.raw_dir_is_default,
                scale=settings.demo_scale,
                seed=settings.seed,
            ),
        },
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        # Runs that name no logger in their config keep Dagster's console logger; the main job
        # names `progress` (see recsys_assets.terminal) to print compact lines instead.
        loggers={"console": dg.colored_console_logger, "progress": progress_logger},
    )


@dg.definitions
def defs() -> Definitions:
    return build_definitions()
