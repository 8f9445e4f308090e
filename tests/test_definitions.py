"""The code location loads and its asset graph is wired as DESIGN.md describes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, BackfillPolicy, DynamicPartitionsDefinition


def _defs():
    from recsys_assets.definitions import defs

    return defs()  # the lazily built code location, as Dagster's tools load it


def test_definitions_load_and_graph_shape():
    defs = _defs()
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
    # days come from the data (registered before loading), not from a configured window
    assert isinstance(raw.partitions_def, DynamicPartitionsDefinition)
    assert raw.backfill_policy == BackfillPolicy.single_run()

    parents = {k.to_user_string() for k in graph.get(AssetKey("interactions")).parent_keys}
    assert parents == {"raw_events"}
    assert AssetKey("splits") in graph.get(AssetKey("item_catalog")).parent_keys
    assert AssetKey("interactions") in graph.get(AssetKey("association_rules")).parent_keys

    models = graph.get(AssetKey("trained_model")).partitions_def.get_partition_keys()
    assert set(models) == {
        "popular", "als", "item_knn", "content_based", "ncf", "gru4rec", "hybrid"
    }  # fmt: skip
    assert AssetKey("trained_model") in graph.get(AssetKey("eval_recommendations")).parent_keys

    # Assets that reach the DuckDB file only through the IO manager or the model store hold it
    # only while loading and storing, and their connections wait their turn: they run side by
    # side in no pool. Those holding a connection of their own for their whole body (the
    # feedback loop's) are in the single-slot pool.
    own_connection = {"feedback_events", "online_ab_report"}
    for assets_def in defs.assets:
        names = {key.to_user_string() for key in assets_def.keys}
        expected = "duckdb" if names & own_connection else None
        assert assets_def.op.pool == expected, names


def test_dagster_yaml_limits_pools_to_one_slot():
    from pathlib import Path

    import yaml

    config = yaml.safe_load(Path(__file__).parents[1].joinpath("dagster.yaml").read_text())
    assert config["concurrency"]["pools"]["default_limit"] == 1


def test_jobs_schedules_sensors_resolve():
    from recsys_assets.partitions import event_days, model_partitions

    defs = _defs()

    def selected(job: str) -> set[str]:
        return {
            k.to_user_string() for k in defs.resolve_job_def(job).asset_layer.selected_asset_keys
        }

    assert defs.resolve_job_def("ingest_job").partitions_def == event_days
    assert selected("ingest_job") == {"raw_events"}
    assert defs.resolve_job_def("models_job").partitions_def == model_partitions
    assert selected("models_job") == {
        "tuned_params",
        "trained_model",
        "eval_recommendations",
        "model_metrics",
    }
    assert {"interactions", "splits", "item_catalog", "conversion_funnel"} <= selected(
        "refresh_job"
    )
    assert "raw_events" not in selected("refresh_job")
    assert [n.name for n in defs.resolve_job_def("register_event_days_job").nodes] == [
        "register_days_of_events_file"
    ]
    assert defs.resolve_sensor_def("events_file_sensor").job_name == "ingest_job"


def test_importing_the_code_has_no_side_effect(tmp_path):
    """Importing every module and building the Definitions creates no folder or file."""
    data = tmp_path / "data"
    home = tmp_path / "home"  # libraries may keep caches there (matplotlib, …): not ours
    home.mkdir()
    code = (
        "import pkgutil, importlib, recsys_assets\n"
        "for m in pkgutil.walk_packages(recsys_assets.__path__, 'recsys_assets.'):\n"
        "    importlib.import_module(m.name)\n"
        "from recsys_assets.definitions import defs\n"
        "defs()\n"
    )
    env = {"PATH": "", "HOME": str(home), "RECSYS_DATA_DIR": str(data)}
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_no_dagster_internals_imported():
    root = Path(__file__).parents[1]
    files = [*root.glob("recsys_assets/**/*.py"), *root.glob("recsys_serving/**/*.py")]
    files += [*root.glob("tests/**/*.py"), *root.glob("benchmarks/**/*.py")]
    offenders = [
        str(f.relative_to(root))
        for f in files
        if f != Path(__file__)
        and ("from dagster._" in f.read_text() or "import dagster._" in f.read_text())
    ]
    assert offenders == []


def test_stages_are_derived_from_the_definitions():
    """The main job's stages follow the graph: a new asset joins them with no other edit."""
    from dagster import Definitions, asset

    from recsys_assets.partitions import model_partitions
    from recsys_assets.pipeline import plan_stages

    @asset(partitions_def=model_partitions, deps=["model_metrics"])
    def model_report() -> None: ...

    @asset(deps=["leaderboard", model_report])
    def weekly_digest() -> None: ...

    defs = Definitions.merge(_defs(), Definitions(assets=[model_report, weekly_digest]))
    stages = [[k.to_user_string() for k in s.assets] for s in plan_stages(defs)]
    where = {name: i for i, names in enumerate(stages) for name in names}
    assert stages[0] == ["raw_events"]
    assert where["category_tree"] == where["interactions"] == where["association_rules"]
    assert where["model_report"] == where["trained_model"] > where["splits"]
    assert where["weekly_digest"] == where["leaderboard"] > where["model_report"]
    graph = defs.resolve_asset_graph()
    for i, names in enumerate(stages):  # every parent runs in an earlier stage or the same one
        for name in names:
            for parent in graph.get(AssetKey(name)).parent_keys:
                assert where[parent.to_user_string()] <= i


def test_every_domain_module_is_loaded_without_a_list():
    """definitions.py lists no module: whatever a module under recsys_assets.defs defines at
    module level (assets, jobs, sensors) is in the code location, so a new one needs no edit."""
    import importlib
    import pkgutil

    from dagster import AssetsDefinition, SensorDefinition

    import recsys_assets.defs as domains

    found_assets, found_sensors, domains_seen = set(), set(), set()
    for info in pkgutil.walk_packages(domains.__path__, "recsys_assets.defs."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, AssetsDefinition):
                found_assets |= {k.to_user_string() for k in value.keys}
                domains_seen.add(info.name.split(".")[2])
            elif isinstance(value, SensorDefinition):
                found_sensors.add(value.name)
    defs = _defs()
    graph = defs.resolve_asset_graph()
    loaded = {
        k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).is_materializable
    }
    assert loaded == found_assets
    assert {s.name for s in defs.sensors} == found_sensors
    assert domains_seen == {
        "ingestion", "interactions", "analytics", "models", "serving",
        "experiments", "reports", "feedback",
    }  # fmt: skip


def test_models_reach_their_consumers_as_inputs_not_lookups():
    """tuned_params → trained_model → session_metrics / serving_bundle are real inputs (values
    loaded by the IO managers through partition mappings), so the UI shows the true lineage."""
    from dagster import AllPartitionMapping, IdentityPartitionMapping

    defs = _defs()
    graph = defs.resolve_asset_graph()

    def value_input(child: str, parent: str):
        assets_def = graph.get(AssetKey(child)).assets_def
        assert AssetKey(parent) in graph.get(AssetKey(child)).parent_keys
        names = [n for n, k in assets_def.keys_by_input_name.items() if k == AssetKey(parent)]
        assert len(names) == 1, (child, parent)
        # a `deps=` edge is an input of Dagster's Nothing type: no value reaches the asset
        assert not assets_def.op.ins[names[0]].dagster_type.is_nothing, (child, parent)
        return assets_def.get_partition_mapping(AssetKey(parent))

    assert isinstance(value_input("trained_model", "tuned_params"), IdentityPartitionMapping)
    assert isinstance(value_input("serving_bundle", "trained_model"), AllPartitionMapping)
    session = value_input("session_metrics", "trained_model")
    models = graph.get(AssetKey("trained_model")).partitions_def
    upstream = session.get_upstream_mapped_partitions_result_for_partitions(
        None, None, models, dynamic_partitions_store=None
    ).partitions_subset.get_partition_keys()
    # Popularity (the baseline) and the models with a native session mode
    assert sorted(upstream) == ["gru4rec", "item_knn", "popular"]


def test_a_dagster_home_that_does_not_exist_yet_is_created(tmp_path, monkeypatch):
    """DAGSTER_HOME naming a new folder: created with the repo's dagster.yaml, no traceback."""
    from dagster import DagsterInstance

    from recsys_assets.pipeline import _default_dagster_home

    home = tmp_path / "new" / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    _default_dagster_home(tmp_path / "data")
    assert (home / "dagster.yaml").read_text() == (
        Path(__file__).parents[1] / "dagster.yaml"
    ).read_text()
    with DagsterInstance.get() as instance:  # the instance Dagster builds from that folder
        assert instance.get_settings("python_logs")["managed_python_loggers"] == ["recsys_assets"]
