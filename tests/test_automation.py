"""Declarative automation on the project's real graph shape, tick by tick, with a real instance.

The stand-in graph copies every asset of the Definitions (keys, dependencies, partitions and
partition mappings, groups) with bodies that do nothing, and gets its conditions from the same
``with_automation`` as the code location: what is tested is the conditions on this graph, not
model training (``test_fresh_loop.py`` runs the real assets).
"""

from __future__ import annotations

import dagster as dg
import pytest
from automation_ticks import first_tick, in_process_executor, settle, times_requested

from recsys_assets.defs.automation.conditions import AUTOMATED, with_automation
from recsys_assets.partitions import event_days, model_partitions

MODELS = model_partitions.get_partition_keys()
ROOTS = ["category_tree", "item_property_history"]


def _real_defs(tmp_path):
    from dataclasses import replace

    from recsys_assets.definitions import build_definitions
    from recsys_assets.settings import Settings

    settings = replace(
        Settings.from_env(), data_dir=tmp_path, raw_dir=tmp_path / "raw", raw_dir_is_default=False
    )
    return build_definitions(settings)


def _stand_in(real: dg.Definitions, automate=with_automation) -> dg.Definitions:
    graph = real.resolve_asset_graph()
    assets = []
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        if not node.is_materializable:
            continue
        spec = dg.AssetSpec(
            key,
            deps=[
                dg.AssetDep(p, partition_mapping=graph.get_partition_mapping(key, p))
                for p in node.parent_keys
            ],
            partitions_def=node.partitions_def,
            group_name=node.group_name,
        )

        assets.append(_no_op(spec))
    return automate(dg.Definitions(assets=assets))


def _no_op(spec: dg.AssetSpec) -> dg.AssetsDefinition:
    @dg.multi_asset(specs=[spec], name=f"stand_in_{spec.key.to_python_identifier()}")
    def body(context):
        yield dg.MaterializeResult(asset_key=spec.key)

    return body


@pytest.fixture(scope="module")
def real_defs(tmp_path_factory):
    return _real_defs(tmp_path_factory.mktemp("automation"))


def _land_days(instance, execute, days):
    """What the events sensor does: register the days, load them."""
    new = [d for d in days if not instance.has_dynamic_partition(event_days.name, d)]
    instance.add_dynamic_partitions(event_days.name, new)
    for day in days:
        execute(day, [dg.AssetKey("raw_events")])


def _automated_partitions(defs) -> set[tuple[str, str | None]]:
    graph = defs.resolve_asset_graph()
    out = set()
    for key in AUTOMATED.resolve(graph):
        pdef = graph.get(key).partitions_def
        for p in pdef.get_partition_keys() if pdef else [None]:
            out.add((key.to_user_string(), p))
    return out


def _describe(ticks) -> str:
    return "\n".join(
        f"tick {i}: {t.count} asset partitions in {len(t.runs)} runs: "
        + "; ".join(f"{p or '-'}: {','.join(keys)}" for p, keys in t.runs)
        for i, t in enumerate(ticks)
    )


def _assert_once_after_models(ticks, expected):
    counts = times_requested(ticks)
    assert {k for k, n in counts.items() if n > 1} == set(), _describe(ticks)
    assert set(counts) == expected, _describe(ticks)
    # the aggregates come in a tick after the one that retrained the last model partition
    models_tick = max(i for i, t in enumerate(ticks) if "model_metrics" in t.requested)
    assert len(ticks[models_tick].requested["model_metrics"]) == len(MODELS)
    for aggregate in ("session_metrics", "leaderboard", "serving_bundle", "ui_reports"):
        assert first_tick(ticks, aggregate) > models_tick, _describe(ticks)


def test_each_change_refreshes_each_asset_once(real_defs):
    """First build, a new day of events, an analytics-only change, a catalog file change."""
    defs = _stand_in(real_defs)
    everything = _automated_partitions(defs)
    with dg.instance_for_test() as instance:
        execute = in_process_executor(defs, instance)
        # the automation sensor is running before the first files land (as with `make dev`)
        _, cursor = settle(defs, instance, execute)

        _land_days(instance, execute, ["2015-06-01", "2015-06-02"])
        execute(None, [dg.AssetKey(k) for k in ROOTS])
        ticks, cursor = settle(defs, instance, execute, cursor)
        print("\nfirst build\n" + _describe(ticks))
        _assert_once_after_models(ticks, everything)

        _land_days(instance, execute, ["2015-06-03"])
        ticks, cursor = settle(defs, instance, execute, cursor)
        print("new day\n" + _describe(ticks))
        _assert_once_after_models(ticks, everything)

        # a user re-runs analytics (e.g. new rule thresholds): only the pages follow
        execute(None, [dg.AssetKey("association_rules"), dg.AssetKey("conversion_funnel")])
        ticks, cursor = settle(defs, instance, execute, cursor)
        print("analytics only\n" + _describe(ticks))
        assert times_requested(ticks) == {("ui_reports", None): 1}

        # a new category tree: catalog, models and everything after them, not the events
        execute(None, [dg.AssetKey("category_tree")])
        ticks, cursor = settle(defs, instance, execute, cursor)
        print("catalog file\n" + _describe(ticks))
        counts = times_requested(ticks)
        assert max(counts.values()) == 1, _describe(ticks)
        assert {("trained_model", m) for m in MODELS} <= set(counts)
        assert ("serving_bundle", None) in counts
        assert ("interactions", None) not in counts and ("splits", None) not in counts


def test_plain_eager_publishes_before_the_models_on_this_shape():
    """Why the conditions are not plain eager(): an aggregate that reads an input directly
    and through partitioned models (serving_bundle reads splits and trained_model) is
    requested on the tick the input changes, beside the models' retraining, so it publishes the
    old models (and, with the daemon, again once they are retrained). The project's condition
    requests it once, on a later tick than the models."""
    models = dg.StaticPartitionsDefinition(["a", "b"])

    def shape(condition):
        @dg.asset(automation_condition=condition)
        def splits_(): ...

        @dg.asset(deps=[splits_], partitions_def=models, automation_condition=condition)
        def model_(): ...

        @dg.asset(deps=[splits_, model_], automation_condition=condition)
        def bundle_(): ...

        return dg.Definitions(assets=[splits_, model_, bundle_])

    def ticks_after_a_change(defs):
        with dg.instance_for_test() as instance:
            execute = in_process_executor(defs, instance)
            _, cursor = settle(defs, instance, execute)
            execute(None, [dg.AssetKey("splits_")])  # a first build, then a change
            _, cursor = settle(defs, instance, execute, cursor)
            execute(None, [dg.AssetKey("splits_")])
            ticks, _ = settle(defs, instance, execute, cursor)
        return [sorted(t.requested) for t in ticks]

    assert ticks_after_a_change(shape(dg.AutomationCondition.eager()))[0] == ["bundle_", "model_"]
    assert ticks_after_a_change(with_automation(shape(None))) == [["model_"], ["bundle_"]]


# --- the raw-folder sensors, with build_sensor_context and a real instance -------------------


def _raw_copy(small_raw_dir, tmp_path):
    import shutil

    raw = tmp_path / "raw"
    shutil.copytree(small_raw_dir, raw)
    return raw


def _evaluate(sensor, instance, source, cursor):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"source": source}
    )
    result = sensor(context)
    if isinstance(result, dg.SkipReason):
        return result, cursor
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
    return result, result.cursor


def _ranges(result):
    from recsys_assets.partitions import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG

    return [
        (r.tags[PARTITION_RANGE_START_TAG], r.tags[PARTITION_RANGE_END_TAG])
        for r in result.run_requests
    ]


def test_events_sensor_loads_exactly_the_affected_days(small_raw_dir, tmp_path):
    import polars as pl
    from recsys_fresh_data import append_day

    from recsys_assets.defs.ingestion.sensors import events_file_sensor
    from recsys_assets.resources import RetailRocketSource

    raw = _raw_copy(small_raw_dir, tmp_path)
    source = RetailRocketSource(raw_dir=str(raw))
    events_csv = raw / "events.csv"
    with dg.instance_for_test() as instance:
        result, cursor = _evaluate(events_file_sensor, instance, source, None)
        days = instance.get_dynamic_partitions(event_days.name)
        assert len(days) > 20 and _ranges(result) == [(days[0], days[-1])]

        result, cursor = _evaluate(events_file_sensor, instance, source, cursor)
        assert isinstance(result, dg.SkipReason)

        new_day = append_day(events_csv)
        result, cursor = _evaluate(events_file_sensor, instance, source, cursor)
        assert _ranges(result) == [(new_day, new_day)]
        assert instance.get_dynamic_partitions(event_days.name)[-1] == new_day

        # one row of a middle day edited in place: that day only
        frame = pl.read_csv(events_csv, infer_schema_length=0)
        day = days[len(days) // 2]
        stamp = pl.col("timestamp").cast(pl.Int64)
        idx = frame.with_row_index().filter(
            pl.from_epoch(stamp, time_unit="ms").dt.strftime("%Y-%m-%d") == day
        )["index"][0]
        frame = frame.with_row_index().filter(pl.col("index") != idx).drop("index")
        frame.write_csv(events_csv)
        result, cursor = _evaluate(events_file_sensor, instance, source, cursor)
        assert _ranges(result) == [(day, day)]


def test_catalog_sensor_reloads_only_the_changed_file(small_raw_dir, tmp_path):
    from recsys_assets.defs.ingestion.sensors import catalog_files_sensor
    from recsys_assets.resources import RetailRocketSource

    raw = _raw_copy(small_raw_dir, tmp_path)
    source = RetailRocketSource(raw_dir=str(raw))
    with dg.instance_for_test() as instance:
        result, cursor = _evaluate(catalog_files_sensor, instance, source, None)
        (request,) = result.run_requests  # never loaded: both
        assert {k.to_user_string() for k in request.asset_selection} == set(ROOTS)
        result, cursor = _evaluate(catalog_files_sensor, instance, source, cursor)
        assert result.run_requests == []
        with open(raw / "category_tree.csv", "a") as f:
            f.write("999999,\n")
        result, cursor = _evaluate(catalog_files_sensor, instance, source, cursor)
        (request,) = result.run_requests
        assert request.asset_selection == [dg.AssetKey("category_tree")]
