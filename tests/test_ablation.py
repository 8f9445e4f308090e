"""The ablation report: its variant spec, variants that really change training, the table the
pipeline writes (deltas recomputed from its own rows) and the run config that picks variants."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import duckdb
import numpy as np
import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance

from recsys_assets.core.data.training_data import build_training_data
from recsys_assets.core.evaluation.holdout import EVAL_K, holdout_targets
from recsys_assets.core.experiments import ablation
from recsys_assets.core.experiments.ablation import BASE, DELTA_METRICS, Variant
from recsys_assets.core.models.hybrid import FEATURE_GROUPS, OWN_SOURCES
from recsys_assets.core.models.hybrid_features import (
    ITEM_FEATURES,
    PAIR_FEATURES,
    USER_FEATURES,
)
from recsys_assets.core.models.registry import MODEL_REGISTRY, create_model, get_model_class

FINAL = ("train", "valid")
DEFAULT_KEYS = {
    "als:no_event_weights",
    "item_knn:k_10",
    "item_knn:k_200",
    "content_based:no_ancestors",
}


@pytest.fixture(scope="module")
def frames(small_raw_dir):
    from generated_frames import load_generated

    return load_generated(small_raw_dir)


@pytest.fixture(scope="module")
def final_data(frames):
    return build_training_data(*frames, use_splits=FINAL)


# --- the spec -----------------------------------------------------------------------------------


def test_default_spec_holds_every_asked_variant():
    registered = list(MODEL_REGISTRY)
    spec = {v.key: v for v in ablation.default_variants(registered)}
    assert DEFAULT_KEYS <= set(spec)
    assert {spec[k].tier for k in DEFAULT_KEYS} == {"default"}
    # ItemKNN k ∈ {10, 50, 200}: 50 is the base (the model's default)
    assert get_model_class("item_knn").default_params()["k"] == 50
    assert spec["als:no_event_weights"].uniform_weights
    assert spec["content_based:no_ancestors"].params == {"ancestor_weight": 0.0}
    assert get_model_class("content_based").default_params()["ancestor_weight"] > 0
    assert spec["gru4rec:carts_and_purchases"].train_events == ("addtocart", "transaction")
    # the Hybrid without each candidate source (from the registry) and each feature group
    sources = [m for m in registered if m != "hybrid"]
    for source in sources:
        v = spec[f"hybrid:without_{source}"]
        assert v.params["sources"] == [s for s in sources if s != source]
    for source in OWN_SOURCES:
        assert f"hybrid:without_{source}" in spec
    for group in FEATURE_GROUPS:
        assert spec[f"hybrid:without_{group}_features"].params == {"drop_feature_groups": [group]}
    assert {v.tier for v in spec.values() if v.model in ("hybrid", "gru4rec")} == {"slow"}
    # every variant's parameters are accepted by its model
    for v in spec.values():
        create_model(v.model, dict(v.params))


def test_spec_leaves_out_models_that_are_not_registered():
    spec = ablation.default_variants(["popular", "als", "item_knn"])
    assert {v.model for v in spec} <= {"popular", "als", "item_knn"}
    assert not any(v.key.startswith("hybrid") for v in spec)


def test_select_variants_puts_each_base_first_and_checks_names():
    spec = ablation.default_variants(list(MODEL_REGISTRY))
    cheap = ablation.select_variants(spec)
    assert [v.key for v in cheap] == [
        "als:base",
        "als:no_event_weights",
        "item_knn:base",
        "item_knn:k_10",
        "item_knn:k_200",
        "content_based:base",
        "content_based:no_ancestors",
    ]
    picked = ablation.select_variants(spec, keys=["item_knn:k_10", "hybrid:without_als"])
    assert [v.key for v in picked] == [
        "item_knn:base",
        "item_knn:k_10",
        "hybrid:base",
        "hybrid:without_als",
    ]
    only_knn = ablation.select_variants(spec, tiers=ablation.TIERS, models=["item_knn"])
    assert {v.model for v in only_knn} == {"item_knn"} and len(only_knn) == 4
    everything = ablation.select_variants(spec, tiers=ablation.TIERS)
    assert len(everything) == len(spec) + len({v.model for v in spec})
    with pytest.raises(ValueError, match=r"unknown variant\(s\) \['als:nope'\]"):
        ablation.select_variants(spec, keys=["als:nope"])
    with pytest.raises(ValueError, match="unknown tier"):
        ablation.select_variants(spec, tiers=["cheap"])
    with pytest.raises(ValueError, match=r"no variants for \['ncf'\]"):
        ablation.select_variants(spec, models=["ncf"])
    with pytest.raises(ValueError, match="train_events"):
        Variant("als", "bad", train_events=("click",))


# --- variants change what is learnt -------------------------------------------------------------


def test_als_without_event_weights_learns_different_factors(frames, final_data):
    splits, catalog, tree = frames
    variant = ablation.default_variants(list(MODEL_REGISTRY))[0]
    assert variant.key == "als:no_event_weights"
    uniform = build_training_data(
        ablation.variant_splits(splits, variant), catalog, tree, use_splits=FINAL
    )
    # the same pairs, now weighted by their event count instead of view 1 / cart 3 / buy 5
    assert (uniform.user_item != 0).nnz == final_data.user_item.nnz
    assert (abs((uniform.user_item != 0) - (final_data.user_item != 0))).nnz == 0
    assert not np.allclose(uniform.user_item.data, final_data.user_item.data)
    params = {"factors": 16, "iterations": 5}
    with_w = create_model("als", params).fit(final_data)
    without_w = create_model("als", params).fit(uniform)
    again = create_model("als", params).fit(final_data)
    np.testing.assert_array_equal(with_w.item_factors, again.item_factors)  # seeded: same fit
    assert np.abs(with_w.item_factors - without_w.item_factors).max() > 1e-3


def test_train_events_variant_learns_from_those_events_only(frames):
    splits, _, _ = frames
    variant = Variant("item_knn", "carts", train_events=("addtocart", "transaction"))
    kept = ablation.variant_splits(splits, variant)
    assert set(kept["event"].unique()) == {"addtocart", "transaction"}
    assert kept.height == splits.filter(pl.col("event") != "view").height


def test_lists_of_a_partial_history_variant_exclude_the_whole_history(frames):
    """A model trained on carts only does not know the viewed items; its lists must still
    leave out everything the user saw in train+valid, like every other row's."""
    splits, catalog, tree = frames
    variant = Variant("popular", "carts", train_events=("addtocart", "transaction"))
    data = build_training_data(
        ablation.variant_splits(splits, variant), catalog, tree, use_splits=FINAL
    )
    model = create_model("popular").fit(data)
    history = splits.filter(pl.col("split").is_in(FINAL))
    users = np.sort(holdout_targets(splits)["user_id"].unique().to_numpy())[:300]
    lists = ablation.variant_lists(model, variant, users, history, data)
    seen = history.select("user_id", "item_id").unique()
    assert lists.join(seen, on=["user_id", "item_id"], how="semi").height == 0
    per_user = lists.group_by("user_id").agg(pl.col("rank").sort())
    assert per_user.height == users.size
    assert all(r == list(range(1, EVAL_K + 1)) for r in per_user["rank"].to_list())
    # without the exclusion, Popularity's top items would come back for these users
    plain = ablation.variant_lists(model, Variant("popular", BASE), users, history, data)
    assert plain.join(seen, on=["user_id", "item_id"], how="semi").height > 0


# --- the Hybrid's knobs --------------------------------------------------------------------------


def _split_features(hybrid) -> set[int]:
    e = hybrid.ensemble
    return set(np.unique(e.feature[np.isfinite(e.threshold)]).tolist())


def test_hybrid_drops_a_feature_group_and_runs_without_an_own_source(final_data):
    params = {"sources": ["popular", "item_knn"], "max_iter": 30, "min_samples_leaf": 20}
    full = create_model("hybrid", params).fit(final_data)
    n_fixed = len(ITEM_FEATURES) + len(USER_FEATURES) + len(PAIR_FEATURES)
    source_cols = set(range(n_fixed, full.ensemble.n_features))
    assert _split_features(full) & source_cols, "the full re-ranker splits on source features"
    blind = create_model("hybrid", {**params, "drop_feature_groups": ["source"]}).fit(final_data)
    assert blind.ensemble.n_features == full.ensemble.n_features
    assert _split_features(blind) and not _split_features(blind) & source_cols
    users = final_data.user_ids[:50]
    assert not np.array_equal(
        full.recommend(users, 10).item_ids, blind.recommend(users, 10).item_ids
    )
    # a source switched off proposes nothing: its feature columns are empty, the fit still works
    no_trending = create_model("hybrid", {**params, "trending_candidates": 0}).fit(final_data)
    assert no_trending.recommend(users, 10).item_ids.shape == (50, 10)
    with pytest.raises(ValueError, match="drop_feature_groups"):
        create_model("hybrid", {"drop_feature_groups": ["colour"]})
    assert create_model("hybrid").params["drop_feature_groups"] == []


# --- the runner on small data -------------------------------------------------------------------


def test_run_ablation_rows_and_deltas(frames):
    splits, catalog, tree = frames
    variants = ablation.select_variants(
        ablation.default_variants(list(MODEL_REGISTRY)),
        keys=["item_knn:k_10", "popular:last_7_days"],
    )
    table = ablation.run_ablation(variants, splits, catalog, tree, max_users=150, seed=3)
    assert table["variant"].to_list() == [BASE, "k_10", BASE, "last_7_days"]
    assert (table["users_evaluated"] == 150).all() and table["error"].is_null().all()
    again = ablation.run_ablation(variants, splits, catalog, tree, max_users=150, seed=3)
    assert table.drop("train_seconds", "score_seconds").equals(
        again.drop("train_seconds", "score_seconds")
    )
    _check_deltas(table)


def test_training_user_sample_keeps_the_scored_users_and_caps_the_rest(frames):
    splits = frames[0]
    targets = holdout_targets(splits, FINAL, "test")
    scored, _ = ablation.evaluation_users(targets, 50, seed=3)
    sample = ablation.training_user_sample(splits, scored, 400, seed=3)
    history = sample.filter(pl.col("split").is_in(list(FINAL)))["user_id"].unique()
    assert history.len() == 400
    assert set(scored.tolist()) <= set(sample["user_id"].to_list())
    # a kept user keeps every row
    whole = splits.filter(pl.col("user_id").is_in(history.implode()))
    assert whole.height == sample.filter(pl.col("user_id").is_in(history.implode())).height
    assert ablation.training_user_sample(splits, scored, None, seed=3) is splits
    variants = ablation.select_variants(
        ablation.default_variants(list(MODEL_REGISTRY)), keys=["item_knn:k_10"]
    )
    table = ablation.run_ablation(
        variants, splits, *frames[1:], max_users=50, max_train_users=400, seed=3
    )
    assert (table["train_users"] == 400).all() and table["error"].is_null().all()


# --- the asset in the pipeline ------------------------------------------------------------------


def _check_deltas(table: pl.DataFrame) -> None:
    base = {r["model"]: r for r in table.filter(pl.col("variant") == BASE).iter_rows(named=True)}
    assert set(base) == set(table["model"])
    for row in table.iter_rows(named=True):
        for m in DELTA_METRICS:
            assert row[f"delta_{m}"] == pytest.approx(row[m] - base[row["model"]][m], abs=1e-12)
        if row["variant"] == BASE:
            assert row["delta_ndcg_at_10"] == 0 and json.loads(row["changed_params"]) == {}


def test_pipeline_writes_the_default_report(warehouse):
    table = pl.from_arrow(warehouse.sql("select * from recsys.ablation_report").arrow())
    keys = {f"{m}:{v}" for m, v in table.select("model", "variant").iter_rows()}
    assert keys == DEFAULT_KEYS | {"als:base", "item_knn:base", "content_based:base"}
    assert table["error"].is_null().all()
    _check_deltas(table)
    spec = {v.key: v for v in ablation.default_variants(list(MODEL_REGISTRY))}
    for row in table.filter(pl.col("variant") != BASE).iter_rows(named=True):
        assert (
            json.loads(row["changed_params"]) == spec[f"{row['model']}:{row['variant']}"].changes()
        )
    assert (table["train_seconds"] > 0).all()
    # the same protocol as model_metrics: at this scale the 2,000-user cap does not bind, so
    # every row scores exactly the users model_metrics scored
    metrics = pl.from_arrow(warehouse.sql("select * from recsys.model_metrics").arrow())
    assert metrics["users_evaluated"].max() <= 2000
    assert set(table["users_evaluated"]) == set(metrics["users_evaluated"])
    # variants really differ from their base (each row is its own training)
    assert table.filter(pl.col("variant") != BASE)["delta_ndcg_at_10"].abs().max() > 0


def test_asset_config_selects_variants_and_users(tmp_path, pipeline_run):
    from recsys_assets.definitions import build_definitions

    settings, _ = pipeline_run
    copy = tmp_path / "w.duckdb"
    shutil.copy(settings.duckdb_path, copy)
    defs = build_definitions(replace(settings, duckdb_path=copy))
    job = defs.resolve_implicit_global_asset_job_def()

    def run(config: dict):
        with DagsterInstance.ephemeral() as instance:
            return job.execute_in_process(
                instance=instance,
                asset_selection=[AssetKey("ablation_report")],
                run_config={"ops": {"ablation_report": {"config": config}}},
                raise_on_error=False,
            )

    result = run({"variants": ["content_based:no_time_decay"], "max_users": 100, "seed": 1})
    assert result.success
    with duckdb.connect(str(copy), read_only=True) as con:
        table = pl.from_arrow(con.sql("select * from recsys.ablation_report").arrow())
    assert table.select("model", "variant").rows() == [
        ("content_based", BASE),
        ("content_based", "no_time_decay"),
    ]
    assert (table["users_evaluated"] == 100).all()
    _check_deltas(table)
    [materialization] = result.asset_materializations_for_node("ablation_report")
    md = materialization.metadata
    assert "data:image/png;base64," in md["delta_plot"].value
    assert "no_time_decay" in md["results"].value

    bad = run({"variants": ["als:nope"]})
    assert not bad.success
    failure = next(e for e in bad.all_events if e.is_step_failure).event_specific_data.error
    text = str(failure.cause.message if failure.cause else failure.message)
    assert "als:nope" in text and "als:no_event_weights" in text
