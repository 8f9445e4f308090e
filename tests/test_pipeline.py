"""The whole graph materialised in-process on a small generated data set (see conftest)."""

from __future__ import annotations

import polars as pl


def _table(con, name: str) -> pl.DataFrame:
    return pl.from_arrow(con.sql(f"select * from recsys.{name}").arrow())


def test_raw_events_hold_every_day_of_the_file(warehouse, pipeline_run):
    settings, _ = pipeline_run
    from recsys_assets.core.retailrocket import read_events

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
