"""The Dagster code location: the domains of ``recsys_assets.defs`` plus resources and loggers.

Every asset, job, schedule and sensor defined at module level under ``recsys_assets.defs``
(``ingestion``, ``interactions``, ``analytics``, ``models``, ``serving``) is loaded from there, so
adding one to a domain module needs no edit here.

``defs`` is built lazily (``@dagster.definitions``): importing this module reads no
environment variable and creates no folder; Dagster's tools call it when they load the code
location, and the main job and the tests call ``build_definitions`` with their own settings.
"""

from __future__ import annotations

import dagster as dg
from dagster import Definitions
from dagster_mlflow import mlflow_tracking

import recsys_assets.defs as domains
from recsys_assets.defs.automation.conditions import with_automation
from recsys_assets.io_managers import ModelStoreIOManager, WarehouseIOManager, WarehouseResource
from recsys_assets.resources import ModelStoreResource, RedisResource, RetailRocketSource
from recsys_assets.settings import DUCKDB_SCHEMA, Settings
from recsys_assets.terminal import progress_logger
from recsys_assets.tracking import MLFLOW_EXPERIMENT


def build_definitions(settings: Settings | None = None) -> Definitions:
    """Build the Definitions for one environment (tests pass their own temporary settings)."""
    settings = settings or Settings.from_env()
    database = str(settings.duckdb_path)
    defs = dg.load_definitions_from_package_module(
        domains,
        resources={
            "io_manager": WarehouseIOManager(database=database, schema=DUCKDB_SCHEMA),
            "model_io_manager": ModelStoreIOManager(database=database, schema_name=DUCKDB_SCHEMA),
            "model_store": ModelStoreResource(database=database, schema_name=DUCKDB_SCHEMA),
            "warehouse": WarehouseResource(database=database),
            "redis": RedisResource(url=settings.redis_url, prefix=settings.redis_prefix),
            "mlflow": mlflow_tracking.configured(
                {
                    "experiment_name": MLFLOW_EXPERIMENT,
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
        # Runs that name no logger in their config keep Dagster's console logger; the main job
        # names `progress` (see recsys_assets.terminal) to print compact lines instead.
        loggers={"console": dg.colored_console_logger, "progress": progress_logger},
    )
    # Automation conditions are derived from the graph's shape (defs/automation/conditions.py),
    # so they are attached here rather than written on each asset.
    return with_automation(defs)


@dg.definitions
def defs() -> Definitions:
    return build_definitions()
