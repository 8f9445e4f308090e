"""The whole graph materialised in-process on a small generated data set (see conftest)."""

from __future__ import annotations

import polars as pl


def _table(con, name: str) -> pl.DataFrame:
    return pl.from_arrow(con.sql(f"select * from recsys.{name}").arrow())


def test_raw_events_hold_every_day_of_the_file(warehouse, pipeline_run):
    settings, _ = pipeline_run
    from recsys_assets.core.data.retailrocket import read_events

    events, report = read_events(settings.raw_dir / "events.csv")
    stored = warehouse.sql("select count(*) from recsys.raw_events").fetchone()[0]
    assert stored == events.height == report.rows
    days = warehouse.sql(
        'select count(distinct cast(epoch_ms("timestamp") as date)) from recsys.raw_events'
    ).fetchone()[0]
    assert days > 100


def test_splits_contract_and_temporal_order(warehouse):
    splits = _table(warehouse, "splits")
    assert {"split", "user_id", "item_id", "event", "timestamp"} <= set(splits.columns)
    assert set(splits["split"].unique()) == {"train", "valid", "test"}
    share = splits.group_by("split").len().with_columns(pl.col("len") / splits.height)
    shares = dict(share.iter_rows())
    assert abs(shares["train"] - 0.7) < 0.02
    assert abs(shares["valid"] - 0.1) < 0.02
    assert abs(shares["test"] - 0.2) < 0.02
    bounds = splits.group_by("split").agg(
        pl.col("timestamp").min().alias("lo"), pl.col("timestamp").max().alias("hi")
    )
    b = {r["split"]: r for r in bounds.iter_rows(named=True)}
    assert b["train"]["hi"] <= b["valid"]["lo"] and b["valid"]["hi"] <= b["test"]["lo"]


def test_item_catalog_does_not_peek_past_the_test_start(warehouse):
    catalog = _table(warehouse, "item_catalog")
    test_start = warehouse.sql(
        "select min(timestamp) from recsys.splits where split = 'test'"
    ).fetchone()[0]
    assert catalog["as_of"].max() <= test_start
    assert catalog["category_id"].is_not_null().mean() > 0.9
    assert catalog["item_id"].is_unique().all()


def test_analytics_tables(warehouse):
    funnel = _table(warehouse, "conversion_funnel")
    overall = funnel.filter(pl.col("scope") == "overall").row(0, named=True)
    assert overall["views"] > overall["addtocarts"] > overall["transactions"] > 0
    assert 0 < overall["view_to_cart"] < 1 and 0 < overall["cart_to_purchase"] <= 1
    assert funnel.filter(pl.col("scope") == "day").height > 100

    heat = _table(warehouse, "activity_heatmap")
    assert heat.height == 7 * 24
    interactions = warehouse.sql("select count(*) from recsys.interactions").fetchone()[0]
    assert heat["events"].sum() == interactions

    rfm = _table(warehouse, "rfm_segments")
    assert rfm.height > 0 and rfm["r_score"].is_between(1, 5).all()
    assert rfm["segment"].n_unique() >= 3


def test_rules_recover_planted_bundles(warehouse, pipeline_run):
    import json

    settings, _ = pipeline_run
    truth = json.loads((settings.raw_dir / "generator_truth.json").read_text())
    bundles = [set(b) for b in truth["bundles"]]
    rules = _table(warehouse, "association_rules").filter(
        (pl.col("basket_type") == "transaction") & (pl.col("algorithm") == "fpgrowth")
    )
    assert rules.height > 0
    found = [
        set(a) | set(c) for a, c in zip(rules["antecedents"], rules["consequents"], strict=True)
    ]
    in_bundle = sum(any(f <= b for b in bundles) for f in found)
    # Most high-lift transaction rules are planted bundles, not chance co-occurrences.
    top = rules.sort("lift", descending=True).head(20)
    top_found = [
        set(a) | set(c) for a, c in zip(top["antecedents"], top["consequents"], strict=True)
    ]
    assert sum(any(f <= b for b in bundles) for f in top_found) >= 0.8 * len(top_found)
    assert in_bundle >= 5
    apriori = _table(warehouse, "association_rules").filter(
        (pl.col("basket_type") == "transaction") & (pl.col("algorithm") == "apriori")
    )
    assert apriori.height == rules.height


def test_eval_recommendations_reproduce_model_metrics(warehouse):
    """Recompute P/R/NDCG/HR@10 from the stored lists with plain Python, independently."""
    import math

    targets: dict[int, set[int]] = {}
    rows = warehouse.sql(
        """
        select t.user_id, t.item_id
        from (select distinct user_id, item_id from recsys.splits where split = 'test') t
        where t.user_id in (select user_id from recsys.splits where split in ('train', 'valid'))
          and (t.user_id, t.item_id) not in (
              select user_id, item_id from recsys.splits where split in ('train', 'valid'))
        """
    ).fetchall()
    for user, item in rows:
        targets.setdefault(user, set()).add(item)
    metrics = _table(warehouse, "model_metrics")
    lists = _table(warehouse, "eval_recommendations")
    from recsys_assets.core.models.registry import MODEL_REGISTRY

    # every registered model (the four classic ones, NCF, GRU4Rec and the Hybrid) was scored
    assert set(metrics["model"]) == set(MODEL_REGISTRY) >= {"ncf", "gru4rec", "hybrid"}
    for row in metrics.iter_rows(named=True):
        model_lists = lists.filter(pl.col("model") == row["model"]).sort("user_id", "rank")
        by_user = {
            u: items for u, items in model_lists.group_by("user_id").agg("item_id").iter_rows()
        }
        p = r = n = h = 0.0
        for user, relevant in targets.items():
            top = by_user.get(user, [])[:10]
            hits = [i for i, item in enumerate(top) if item in relevant]
            p += len(hits) / 10
            r += len(hits) / len(relevant)
            dcg = sum(1 / math.log2(i + 2) for i in hits)
            idcg = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), 10)))
            n += dcg / idcg
            h += bool(hits)
        users = len(targets)
        assert row["users_evaluated"] == users
        assert math.isclose(row["precision_at_10"], p / users, rel_tol=1e-9)
        assert math.isclose(row["recall_at_10"], r / users, rel_tol=1e-9)
        assert math.isclose(row["ndcg_at_10"], n / users, rel_tol=1e-9)
        assert math.isclose(row["hit_rate_at_10"], h / users, rel_tol=1e-9)
        # the training time measured by trained_model, as stored with the scored version
        stored = warehouse.execute(
            "select cast(info->>'train_seconds' as double) from recsys.model_store "
            "where model = ? and version = ?",
            [row["model"], row["model_version"]],
        ).fetchone()[0]
        assert row["train_seconds"] == stored and 0 < stored < 600


def test_leaderboard_and_model_store(warehouse):
    board = _table(warehouse, "leaderboard")
    print(board.select("model", "ndcg_at_10", "precision_at_10", "train_seconds"))
    assert board["ndcg_at_10"].is_sorted(descending=True)
    store = warehouse.sql(
        "select model, count(*), min(size_bytes) from recsys.model_store group by 1"
    ).fetchall()
    assert {m for m, _, _ in store} == set(board["model"])
    assert all(n >= 1 and size > 0 for _, n, size in store)
    sessions = _table(warehouse, "session_metrics")
    # Popularity (the baseline) and the models with a native session mode
    assert set(sessions["model"]) == {"popular", "item_knn", "gru4rec"}
    rec = dict(zip(sessions["model"], sessions["recall_at_20"], strict=True))
    mrr = dict(zip(sessions["model"], sessions["mrr_at_20"], strict=True))
    # the planted within-session transitions are what the session models find
    assert rec["item_knn"] > 2 * rec["popular"]
    assert rec["gru4rec"] > 2 * rec["popular"] and mrr["gru4rec"] > 2 * mrr["popular"]
    assert (
        board.filter(pl.col("model") == "gru4rec")["session_recall_at_20"].item()
        == (rec["gru4rec"])
    )


def test_hybrid_row_and_its_sources(warehouse):
    """The Hybrid is on the leaderboard, above Popularity, built from every other model."""
    import json

    from recsys_assets.core.models.registry import MODEL_REGISTRY

    board = _table(warehouse, "leaderboard")
    ndcg = dict(zip(board["model"], board["ndcg_at_10"], strict=True))
    assert set(ndcg) == set(MODEL_REGISTRY)
    assert ndcg["hybrid"] > ndcg["popular"], ndcg
    version = board.filter(pl.col("model") == "hybrid")["model_version"].item()
    params = json.loads(
        warehouse.execute(
            "select params from recsys.model_store where model = 'hybrid' and version = ?",
            [version],
        ).fetchone()[0]
    )
    # the sources it was fitted with: every registered model but itself
    assert sorted(params["sources"]) == sorted(set(MODEL_REGISTRY) - {"hybrid"})


def test_hybrid_reuses_the_stored_sources(warehouse):
    """trained_model[hybrid] takes the other partitions' models of the same training data as its
    final sources, and its tuning takes the models the other studies chose (no refits)."""
    import json

    from recsys_assets.core.models.registry import MODEL_REGISTRY

    sources = sorted(set(MODEL_REGISTRY) - {"hybrid"})
    info = json.loads(
        warehouse.execute(
            "select info from recsys.model_store where model = 'hybrid' "
            "order by version desc limit 1"
        ).fetchone()[0]
    )
    assert info["reused_sources"] == sources
    # stored as references to the sources' versions, not copies of their bytes
    from recsys_assets.core.models.serialization import unpack

    payload = warehouse.execute(
        "select payload from recsys.model_store where model = 'hybrid' "
        "order by version desc limit 1"
    ).fetchone()[0]
    arrays, _ = unpack(bytes(payload))
    # (a model's state arrays carry the prefix "state_" in its archive)
    refs = {
        k.removeprefix("state_source_ref_"): int(v[0])
        for k, v in arrays.items()
        if k.startswith("state_source_ref_")
    }
    assert refs == {n: int(v) for n, v in info["source_versions"].items()}
    copies = [k for k in arrays if k.startswith("state_source_") and "_ref_" not in k]
    assert copies == []
    final_version = warehouse.execute(
        "select version from recsys.training_data where name = 'final'"
    ).fetchone()[0]
    versions = dict(
        warehouse.execute(
            "select model, cast(info->>'training_data_version' as integer) "
            "from recsys.model_store where model != 'hybrid'"
        ).fetchall()
    )
    assert versions == dict.fromkeys(sources, final_version)
    tuning_version = warehouse.execute(
        "select version from recsys.training_data where name = 'tuning'"
    ).fetchone()[0]
    fits = warehouse.execute(
        "select model, count(*), min(cast(info->>'training_data_version' as integer)) "
        "from recsys.tuning_fits group by 1 order by 1"
    ).fetchall()
    assert fits == [(name, 1, tuning_version) for name in sources]
    # those tuning fits (train split) are its history-phase sources: the label period is the
    # valid split, after the train split's last event
    assert sorted(info["reused_history_sources"]) == sources
    train_end = warehouse.execute(
        "select max(timestamp) from recsys.splits where split = 'train'"
    ).fetchone()[0]
    stored_end = warehouse.execute(
        "select train_end_ms from recsys.training_data where name = 'final'"
    ).fetchone()[0]
    assert stored_end == train_end


def test_hybrid_evaluation_reads_its_sources_stored_lists(pipeline_run):
    """eval_recommendations[hybrid] takes its candidates from the sources' own stored lists
    (same model versions); the serving consistency test checks the lists equal the model's own."""
    from dagster import AssetKey, AssetRecordsFilter

    from recsys_assets.core.models.registry import MODEL_REGISTRY

    _, instance = pipeline_run
    record = instance.fetch_materializations(
        AssetRecordsFilter(AssetKey("eval_recommendations"), asset_partitions=["hybrid"]), limit=1
    ).records[0]
    reused = record.asset_materialization.metadata["source_lists_reused"].value
    assert reused.split(", ") == sorted(set(MODEL_REGISTRY) - {"hybrid"})


def test_a_skipped_study_has_the_columns_and_types_of_a_run_one():
    """tuned_params partitions share one DuckDB table: a skipped study's row (null scores)
    must line up with a study's row column for column."""
    import polars as pl

    from recsys_assets.defs.models.assets import _tuned_params_table

    ran = _tuned_params_table("als", {"factors": 64}, (0.02, 0.019, 0.021, 1.2), 3, 6, 30.5, 900)
    skipped = _tuned_params_table("hybrid", {"max_iter": 60}, None, 0, 0, 0.0, 900)
    assert ran.schema == skipped.schema
    both = pl.concat([ran, skipped])
    assert both["best_ndcg_at_10"].to_list() == [0.02, None]
    assert both["n_trials"].to_list() == [6, 0]


def test_models_train_side_by_side_and_the_hybrid_after_its_sources(pipeline_run):
    """The model runs of the main job overlap two at a time (each in a worker process), and
    the Hybrid's run starts only once every model it builds on has been stored."""
    from dagster import DagsterRunStatus, RunsFilter

    from recsys_assets.partitions import PARTITION_TAG

    _, instance = pipeline_run
    spans = {}
    for run in instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.SUCCESS])):
        selection = {key.to_user_string() for key in run.dagster_run.asset_selection or ()}
        if "trained_model" in selection:
            partition = run.dagster_run.tags[PARTITION_TAG]
            spans[partition] = (run.start_time, run.end_time)
    assert len(spans) == 7, spans
    others = {name: span for name, span in spans.items() if name != "hybrid"}
    assert spans["hybrid"][0] >= max(end for _, end in others.values())
    overlapping = [
        (a, b)
        for a in others
        for b in others
        if a < b and others[a][0] < others[b][1] and others[b][0] < others[a][1]
    ]
    assert overlapping, f"no two model runs overlapped: {spans}"


def test_partition_waves_put_models_built_on_others_last():
    from recsys_assets.core.models.registry import MODEL_REGISTRY
    from recsys_assets.partitions import event_days, model_partitions, partition_waves

    waves = partition_waves(model_partitions, list(MODEL_REGISTRY))
    assert waves[-1] == ["hybrid"]
    assert waves[0][:3] == ["ncf", "gru4rec", "als"]  # the longest first
    assert sorted(waves[0]) == sorted(set(MODEL_REGISTRY) - {"hybrid"})
    assert partition_waves(model_partitions, ["popular"]) == [["popular"]]
    assert partition_waves(event_days, ["2015-06-01", "2015-06-02"]) == [
        ["2015-06-01", "2015-06-02"]
    ]


class _Heavy:
    """Stands for a model: an output a finished run must not keep alive."""


def test_a_finished_run_keeps_none_of_its_outputs_alive(tmp_path):
    """A worker runs one Dagster run after another: the last run's outputs (models of a GB
    and more at scale 1.0) must be freed when it ends, not carried into the next run."""
    import gc
    import weakref

    from dagster import AssetKey, DagsterInstance, Definitions, FilesystemIOManager, asset

    from recsys_assets.pipeline import _execute_run

    made = []

    @asset
    def heavy() -> _Heavy:
        made.append(weakref.ref(obj := _Heavy()))
        return obj

    @asset
    def reader(heavy: _Heavy) -> int:  # a step with an input, as every model step has
        return 1

    defs = Definitions(
        assets=[heavy, reader],
        resources={"io_manager": FilesystemIOManager(base_dir=str(tmp_path))},
    )
    with DagsterInstance.ephemeral() as instance:
        keys = [AssetKey("heavy"), AssetKey("reader")]
        assert _execute_run(defs, instance, keys, {}, {}) == []
        gc.collect()
        assert made and made[0]() is None
