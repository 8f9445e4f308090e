"""The code location loads and its asset graph is wired as DESIGN.md describes."""

from __future__ import annotations

from dagster import AssetKey, DailyPartitionsDefinition
from dagster._core.definitions.backfill_policy import BackfillPolicyType


def test_definitions_load_and_graph_shape():
    from recsys_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    expected = {
        "raw_events",
        "category_tree",
        "item_property_history",
        "item_catalog",
        "interactions",
        "splits",
        "conversion_funnel",
        "activity_heatmap",
        "rfm_segments",
        "association_rules",
        "tuned_params",
        "trained_model",
        "eval_recommendations",
        "model_metrics",
        "session_metrics",
        "leaderboard",
        "serving_bundle",
    }
    assert expected <= keys

    raw = graph.get(AssetKey("raw_events"))
    assert isinstance(raw.partitions_def, DailyPartitionsDefinition)
    assert raw.backfill_policy.policy_type == BackfillPolicyType.SINGLE_RUN
    days = raw.partitions_def.get_partition_keys()
    assert days[0] == "2015-05-03" and days[-1] == "2015-09-18"

    parents = {k.to_user_string() for k in graph.get(AssetKey("interactions")).parent_keys}
    assert parents == {"raw_events"}
    assert AssetKey("splits") in graph.get(AssetKey("item_catalog")).parent_keys
    assert AssetKey("interactions") in graph.get(AssetKey("association_rules")).parent_keys

    models = graph.get(AssetKey("trained_model")).partitions_def.get_partition_keys()
    assert {"popular", "als", "item_knn", "content_based"} <= set(models)
    assert AssetKey("trained_model") in graph.get(AssetKey("eval_recommendations")).parent_keys

    # Every asset writes to the DuckDB file, so every asset is in the single-slot pool.
    for assets_def in defs.assets:
        assert assets_def.op.pool == "duckdb", assets_def.keys


def test_dagster_yaml_limits_pools_to_one_slot():
    from pathlib import Path

    import yaml

    config = yaml.safe_load(Path(__file__).parents[1].joinpath("dagster.yaml").read_text())
    assert config["concurrency"]["pools"]["default_limit"] == 1


def test_jobs_schedules_sensors_resolve():
    from recsys_assets.definitions import defs

    assert defs.resolve_job_def("ingest_job").partitions_def is not None
    assert defs.resolve_job_def("refresh_job") is not None
    assert defs.resolve_job_def("models_job").partitions_def is not None
    assert defs.resolve_schedule_def("ingest_job_schedule") is not None
    assert defs.resolve_sensor_def("refresh_after_ingest") is not None
