"""The main job's runs and their order when workers run them side by side (graph_tasks.py)."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance


@pytest.fixture(scope="module")
def tasks():
    from recsys_assets.definitions import build_definitions
    from recsys_assets.graph_tasks import plan_tasks
    from recsys_assets.pipeline import plan_stages

    defs = build_definitions()
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("event_days", ["2015-05-03", "2015-05-04"])
    return plan_tasks(defs, instance, plan_stages(defs))


def test_each_run_waits_for_exactly_the_runs_it_reads(tasks):
    from recsys_assets.core.models.registry import MODEL_REGISTRY
    from recsys_assets.defs.models.assets import SESSION_MODELS

    n = {t.partition or t.label: i for i, t in enumerate(tasks)}
    assert len(n) == len(tasks)  # one run per asset, per model, one for the days
    assert tasks[n["raw_events"]].tags  # the days: one run over a range
    models = [n[m] for m in MODEL_REGISTRY]
    for model in MODEL_REGISTRY:
        if model != "hybrid":
            assert tasks[n[model]].after == {n["splits"], n["item_catalog"], n["training_data"]}
    # the Hybrid builds on every other model
    assert tasks[n["hybrid"]].after >= {n[m] for m in MODEL_REGISTRY if m != "hybrid"}
    # the session metrics read three models' partitions, not the Hybrid's
    assert tasks[n["session_metrics"]].after == {n["splits"], *(n[m] for m in SESSION_MODELS)}
    assert n["hybrid"] not in tasks[n["session_metrics"]].after
    # the bundle waits for the leaderboard and every model, not for the reports
    bundle = tasks[n["serving_bundle"]].after
    assert {n["leaderboard"], *models} <= bundle
    assert not {n["ctr_report"], n["ablation_report"], n["session_metrics"]} & bundle
    assert n["interactions"] in tasks[n["splits"]].after
    assert tasks[n["category_tree"]].after == frozenset()


def test_what_the_models_wait_for_goes_first_then_the_models_then_the_rest(tasks):
    from recsys_assets.graph_tasks import ready

    n = {t.partition or t.label: i for i, t in enumerate(tasks)}
    rank = {name: tasks[i].rank for name, i in n.items()}
    assert rank["training_data"] < rank["ncf"] < rank["gru4rec"] < rank["als"] < rank["popular"]
    assert rank["popular"] < rank["hybrid"] < rank["ablation_report"]
    assert rank["splits"] < rank["activity_heatmap"]
    # the leaderboard (the bundle waits for it) before the reports nothing else waits for
    assert rank["leaderboard"] < rank["ctr_report"]

    # the ablation report may start once the catalogue is there, but not while the training
    # data (what the models wait for) is being built: it would hold a worker a model needs
    before = {i for i in range(n["training_data"])} - {n["ablation_report"]}
    assert tasks[n["ablation_report"]].after <= before
    assert n["ablation_report"] not in ready(tasks, before, before)
    assert ready(tasks, before, before)[0] == n["training_data"]
    # an analytics run (a filler) takes a worker while the property files are still read, but
    # never starts beside the training data (it builds on two cores alone), only after it
    events = {n[name] for name in ("category_tree", "raw_events", "interactions", "splits")}
    reading = events | {n["item_property_history"]}
    assert n["activity_heatmap"] in ready(tasks, events, reading)
    assert ready(tasks, events, reading)[0] == n["activity_heatmap"]
    tables = reading | {n["item_catalog"]}
    assert ready(tasks, tables, tables) == [n["training_data"]]  # the funnel is ready too
    building = tables | {n["training_data"]}
    assert n["conversion_funnel"] not in ready(tasks, tables, building)
    assert n["conversion_funnel"] in ready(tasks, building, building)

    # a dry run of the dispatch: start everything ready, finish in order; every run starts
    # once, after what it waits for
    done: set[int] = set()
    started: set[int] = set()
    order = []
    while len(done) < len(tasks):
        now = ready(tasks, done, started)
        assert now, "nothing may start: a cycle"
        first = now[0]
        assert tasks[first].after <= done
        started.add(first)
        order.append(first)
        done.add(first)
    assert len(order) == len(tasks)
    assert order.index(n["ncf"]) < order.index(n["ablation_report"])


def test_three_groups_fresh_workers_each_and_the_memory_heavy_ones_alone(tasks):
    """The main job's groups: tables side by side, then the models that build on no other with
    what reads only them, then everything else one at a time (the Hybrid, the ablation report
    and the reports that load every model's lists would break 8 GB beside another run)."""
    from recsys_assets.graph_tasks import phases

    n = {t.partition or t.label: i for i, t in enumerate(tasks)}
    groups = phases(tasks)
    assert [side_by_side for _, _, side_by_side in groups] == [True, True, False]
    first, models, rest = (set(members) for _, members, _ in groups)
    assert first | models | rest == set(range(len(tasks)))
    assert {n["raw_events"], n["splits"], n["training_data"]} <= first
    assert {n[m] for m in ("ncf", "gru4rec", "als", "popular")} | {n["session_metrics"]} <= models
    assert {n["hybrid"], n["ablation_report"], n["serving_bundle"], n["ctr_report"]} <= rest
    # the short analytics runs fill the first group's waiting worker, the ablation report not
    analytics = {"activity_heatmap", "association_rules", "rfm_segments", "conversion_funnel"}
    assert {n[name] for name in analytics} <= first
    assert {tasks[n[name]].group for name in analytics} == {"analytics"}
    # every run's inputs come from its own group or an earlier one
    seen: set[int] = set()
    for _, members, _ in groups:
        for member in members:
            assert tasks[member].after <= seen | set(members)
        seen |= set(members)
