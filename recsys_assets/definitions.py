"""The Dagster code location: every asset, resource, job, schedule and sensor of recsys."""

from __future__ import annotations

from dagster import Definitions, load_assets_from_modules
from dagster_duckdb_polars import DuckDBPolarsIOManager

from recsys_assets.assets import analytics, ingestion, interactions
from recsys_assets.automation import jobs, schedules, sensors
from recsys_assets.resources import RetailRocketSource
from recsys_assets.settings import DUCKDB_SCHEMA, Settings


def build_definitions(settings: Settings | None = None) -> Definitions:
    """Build the Definitions for one environment (tests pass their own temporary settings)."""
    settings = settings or Settings.from_env()
    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    return Definitions(
        assets=load_assets_from_modules([ingestion, interactions, analytics]),
        resources={
            "io_manager": DuckDBPolarsIOManager(
                database=str(settings.duckdb_path), schema=DUCKDB_SCHEMA
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
