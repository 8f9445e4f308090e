"""Per-user outcomes, the A/B, CTR and money tables on a hand-made shop (known answers), and
the three report assets on the session pipeline run."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from recsys_assets.core.experiments.ab_report import (
    ABSettings,
    Comparison,
    ab_test_table,
    plan_comparisons,
)
from recsys_assets.core.experiments.ctr import NO_SEGMENT, UNKNOWN_CATEGORY, ctr_table
from recsys_assets.core.experiments.outcomes import (
    OutcomeMatrix,
    outcome_matrix,
    per_user_outcomes,
)
from recsys_assets.core.experiments.plots import plot_ctr_by_position, plot_lifts, plot_revenue
from recsys_assets.core.experiments.revenue import MoneySettings, financial_impact

LOG3 = 1 / math.log2(3)

# Users 1-4 have history; in the test period (t >= 100) user 1 views, carts and buys item 20,
# user 2 views 21, user 3 views 22 and buys 23 without viewing it; user 4 only re-views an old
# item, so has no new test item and is not evaluated. User 5 has no history at all.
SPLITS = pl.DataFrame(
    [
        (1, 10, "view", 1, None, "train"),
        (1, 11, "transaction", 2, 7, "train"),
        (2, 11, "view", 1, None, "train"),
        (3, 12, "view", 50, None, "valid"),
        (4, 13, "view", 2, None, "train"),
        (1, 20, "view", 100, None, "test"),
        (1, 20, "addtocart", 101, None, "test"),
        (1, 20, "transaction", 102, 1, "test"),
        (2, 21, "view", 100, None, "test"),
        (3, 22, "view", 105, None, "test"),
        (3, 23, "transaction", 110, 2, "test"),
        (4, 13, "view", 100, None, "test"),
        (5, 20, "view", 120, None, "test"),
    ],
    schema=["user_id", "item_id", "event", "timestamp", "transaction_id", "split"],
    orient="row",
)
LISTS = {
    "popular": {1: [20, 30], 2: [30, 31], 3: [23, 30]},
    "als": {1: [30, 20], 2: [21, 30], 3: [22, 30]},
}
RECS = pl.DataFrame(
    [
        (model, user, rank, item, 1.0 / rank)
        for model, lists in LISTS.items()
        for user, items in lists.items()
        for rank, item in enumerate(items, start=1)
    ],
    schema=["model", "user_id", "rank", "item_id", "score"],
    orient="row",
)
CATALOG = pl.DataFrame(
    {
        "item_id": [20, 21, 22, 23, 30, 31],
        "root_category_id": [1, 1, 2, 2, None, None],
    }
)
HISTORY = pl.DataFrame(
    [
        (20, 0, "price", 10.0),
        (20, 101, "price", 15.0),  # in force when user 1 buys at t=102
        (23, 0, "price", 7.0),
        (23, 200, "price", 99.0),  # after the purchase: never used
    ],
    schema=["item_id", "timestamp", "property", "value"],
    orient="row",
)


def test_per_user_outcomes_known_answers():
    out = per_user_outcomes(RECS, SPLITS, k=2)
    assert out.columns == [
        "model", "user_id", "hit_at_2", "ndcg_at_2", "click", "add_to_cart", "purchase"
    ]  # fmt: skip
    got = {(r[0], r[1]): r[2:] for r in out.iter_rows()}
    # user 3's targets are {22, 23}: ideal DCG@2 = 1 + 1/log2(3)
    ideal3 = 1 + LOG3
    assert got[("popular", 1)] == (1.0, 1.0, 1.0, 1.0, 1.0)
    assert got[("popular", 2)] == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert got[("popular", 3)] == pytest.approx((1.0, 1 / ideal3, 0.0, 0.0, 1.0))
    assert got[("als", 1)] == pytest.approx((1.0, LOG3, 1.0, 1.0, 1.0))
    assert got[("als", 2)] == (1.0, 1.0, 1.0, 0.0, 0.0)
    assert got[("als", 3)] == pytest.approx((1.0, 1 / ideal3, 1.0, 0.0, 0.0))
    assert set(out["user_id"]) == {1, 2, 3}  # user 4 (no new item) and 5 (no history) are not


def test_outcome_matrix_aligns_users_models_and_the_covariate():
    matrix = outcome_matrix(per_user_outcomes(RECS, SPLITS, k=2), SPLITS)
    assert matrix.models == ("als", "popular")
    np.testing.assert_array_equal(matrix.user_ids, [1, 2, 3])
    np.testing.assert_allclose(matrix.column("als", "click"), [1, 1, 1])
    np.testing.assert_allclose(matrix.column("popular", "purchase"), [1, 0, 1])
    # events in train + valid: user 1 two, users 2 and 3 one each
    np.testing.assert_allclose(matrix.covariate, np.log1p([2, 1, 1]))
    flat = matrix.flat()
    np.testing.assert_allclose(
        flat[:, matrix.flat_index("popular", "purchase")], matrix.column("popular", "purchase")
    )


def test_per_user_outcomes_name_the_missing_column():
    with pytest.raises(ValueError, match=r"splits: missing column\(s\) \['event'\]"):
        per_user_outcomes(RECS, SPLITS.drop("event"))


def test_ctr_table_known_answers():
    segments = pl.DataFrame({"user_id": [1], "segment": ["Champions"]})
    table = ctr_table(RECS, SPLITS, CATALOG, segments, k=2)

    def row(model, breakdown, key):
        found = table.filter(
            (pl.col("model") == model) & (pl.col("breakdown") == breakdown) & (pl.col("key") == key)
        )
        assert found.height == 1, (model, breakdown, key)
        return found.row(0, named=True)

    overall = row("als", "overall", "all")
    assert (overall["shown"], overall["clicks"], overall["carts"], overall["purchases"]) == (
        6, 3, 1, 1
    )  # fmt: skip
    assert overall["ctr"] == pytest.approx(0.5)
    assert row("popular", "overall", "all")["ctr"] == pytest.approx(1 / 6)
    assert row("popular", "overall", "all")["purchase_rate"] == pytest.approx(2 / 6)
    assert row("als", "position", "1")["ctr"] == pytest.approx(2 / 3)
    assert row("als", "position", "2")["ctr"] == pytest.approx(1 / 3)
    assert row("popular", "position", "2")["clicks"] == 0
    # category 1 holds items 20 and 21; 30/31 have no category
    assert row("als", "category", "1")["shown"] == 2 and row("als", "category", "1")["ctr"] == 1
    assert row("als", "category", UNKNOWN_CATEGORY)["shown"] == 3
    assert row("als", "rfm_segment", "Champions")["users"] == 1
    assert row("als", "rfm_segment", NO_SEGMENT)["users"] == 2
    # positions come in numeric order within each model
    positions = table.filter((pl.col("model") == "als") & (pl.col("breakdown") == "position"))
    assert positions["key"].to_list() == ["1", "2"]


def test_financial_impact_known_answers():
    settings = MoneySettings(
        k=2, monthly_users=1000, exposed_share=0.5, n_bootstrap=200, baseline="popular"
    )
    table, assumptions = financial_impact(RECS, SPLITS, HISTORY, settings)
    rows = {r["model"]: r for r in table.iter_rows(named=True)}
    # popular listed 20 for user 1 (bought at 15.0, the price then) and 23 for user 3 (7.0)
    assert rows["popular"]["revenue"] == pytest.approx(22.0)
    assert rows["popular"]["revenue_per_1000_users"] == pytest.approx(22_000 / 3)
    assert rows["als"]["revenue"] == pytest.approx(15.0)
    assert rows["als"]["incremental_per_1000_users"] == pytest.approx(-7_000 / 3)
    assert rows["als"]["monthly_incremental_revenue"] == pytest.approx(-7_000 / 3 * 0.5)
    assert rows["popular"]["incremental_per_1000_users"] == 0.0
    assert rows["popular"]["attributed_purchases"] == 2 and rows["popular"]["buyers"] == 2
    assert table["model"].to_list() == ["popular", "als"]  # best revenue first
    for r in rows.values():
        assert r["revenue_per_1000_users_ci_low"] <= r["revenue_per_1000_users"]
        assert r["revenue_per_1000_users"] <= r["revenue_per_1000_users_ci_high"]
    assert json.loads(table["assumptions_json"][0]) == assumptions
    for key in ("attribution_window", "counterfactual", "exposed_share", "monthly_users", "price"):
        assert key in assumptions


def test_the_attribution_window_drops_later_purchases():
    # the test period starts at t=100; a 5 ms window keeps user 1's purchase (102), not 110
    settings = MoneySettings(k=2, attribution_window_days=5 / 86_400_000, n_bootstrap=50)
    table, _ = financial_impact(RECS, SPLITS, HISTORY, settings)
    assert table.filter(pl.col("model") == "popular")["revenue"][0] == pytest.approx(15.0)


def test_an_unknown_price_adds_no_revenue_and_is_reported():
    table, _ = financial_impact(
        RECS, SPLITS, HISTORY.filter(pl.col("item_id") != 23), MoneySettings(k=2, n_bootstrap=50)
    )
    popular = table.filter(pl.col("model") == "popular").row(0, named=True)
    assert popular["revenue"] == pytest.approx(15.0)
    assert popular["priced_share"] == pytest.approx(0.5)


# --- the A/B table -----------------------------------------------------------------------------


def _planted_matrix(n: int = 3000, seed: int = 0) -> OutcomeMatrix:
    """Three models on the same users: 'b' plants +40% hits over 'a'; 'c' equals 'a' in law."""
    rng = np.random.default_rng(seed)
    activity = rng.poisson(3, n).astype(float)
    p = np.clip(0.02 + 0.06 * activity, 0, 0.8)  # active users hit more: CUPED explains it
    a = (rng.random(n) < p).astype(float)
    b = np.maximum(a, rng.random(n) < 0.4 * p)
    c = (rng.random(n) < p).astype(float)
    per_model = np.stack([a, b, c], axis=1)  # users x models
    values = np.stack([per_model, per_model * 0.5], axis=2)  # two outcomes
    return OutcomeMatrix(
        user_ids=np.arange(n, dtype=np.int64) * 13 + 5,
        models=("a", "b", "c"),
        outcomes=("hit", "half_hit"),
        values=values,
        covariate=np.log1p(activity),
    )


def test_plan_comparisons_champion_first_then_configured_pairs():
    plan = plan_comparisons(["b", "a", "x"], ["a", "b", "c"], ["a:c", "c:b"])
    assert [(c.control, c.treatment, c.kind) for c in plan] == [
        ("b", "a", "champion_vs_challenger"),
        ("b", "c", "champion_vs_challenger"),
        ("a", "c", "configured"),
    ]  # 'c:b' is already compared; 'x' has no lists
    with pytest.raises(ValueError, match=r"model\(s\) \['zzz'\] have no evaluation lists"):
        plan_comparisons(["a"], ["a", "b"], ["a:zzz"])
    with pytest.raises(ValueError, match="control:treatment"):
        plan_comparisons(["a"], ["a", "b"], ["a-b"])


def test_ab_table_detects_the_planted_lift_and_not_the_null_one():
    matrix = _planted_matrix()
    comparisons = [Comparison("a", "b", "x"), Comparison("a", "c", "x")]
    table = ab_test_table(matrix, comparisons, ABSettings(n_bootstrap=500))
    assert table.height == 4
    b = table.filter((pl.col("treatment") == "b") & (pl.col("metric") == "hit")).row(0, named=True)
    c = table.filter((pl.col("treatment") == "c") & (pl.col("metric") == "hit")).row(0, named=True)
    assert b["significant"] and b["verdict"] == "b better"
    assert b["lift_ci_low"] > 0 and b["lift_ci_low"] < b["paired_lift"] < b["lift_ci_high"]
    assert b["welch_p_value"] < 0.01
    assert not c["significant"] and c["verdict"].startswith("not significant")
    assert c["lift_ci_low"] < 0 < c["lift_ci_high"]
    # CUPED with pre-period activity explains part of the variance
    assert b["cuped_variance_reduction"] > 0.02
    # arm sizes are a fair split: no SRM
    assert not table["srm_mismatch"].any()
    assert b["n_control"] + b["n_treatment"] == 3000
    # Holm over all 4 rows: adjusted >= raw, and the smallest raw p is multiplied by 4
    assert (table["paired_p_adjusted"] >= table["paired_p_value"]).all()
    smallest = table.sort("paired_p_value").row(0, named=True)
    assert smallest["paired_p_adjusted"] == pytest.approx(min(1.0, 4 * smallest["paired_p_value"]))
    # the paired MDE at this n, relative to the control mean
    assert c["paired_mde_rel"] == pytest.approx(c["paired_mde_abs"] / c["paired_mean_control"])


def test_ab_table_bh_option_and_a_constant_metric():
    matrix = _planted_matrix(n=500)
    values = matrix.values.copy()
    values[:, :, 1] = 0.0  # a metric nobody ever scores
    matrix = OutcomeMatrix(
        matrix.user_ids, matrix.models, matrix.outcomes, values, matrix.covariate
    )
    table = ab_test_table(
        matrix, [Comparison("a", "b", "x")], ABSettings(n_bootstrap=100, correction="bh")
    )
    constant = table.filter(pl.col("metric") == "half_hit").row(0, named=True)
    assert math.isnan(constant["paired_p_value"]) and not constant["significant"]
    assert constant["verdict"] == "undefined (no variation)"
    hit = table.filter(pl.col("metric") == "hit").row(0, named=True)
    assert hit["paired_p_adjusted"] == pytest.approx(hit["paired_p_value"])  # family of 1
    assert table["correction"].unique().to_list() == ["bh"]


def test_report_plots_render():
    matrix = _planted_matrix(n=400)
    table = ab_test_table(matrix, [Comparison("a", "b", "x")], ABSettings(n_bootstrap=50))
    segments = pl.DataFrame({"user_id": [1], "segment": ["Champions"]})
    money, _ = financial_impact(RECS, SPLITS, HISTORY, MoneySettings(k=2, n_bootstrap=20))
    for fig in (
        plot_lifts(table),
        plot_ctr_by_position(ctr_table(RECS, SPLITS, CATALOG, segments, k=2)),
        plot_revenue(money),
    ):
        assert fig.axes


# --- the assets on the session pipeline run ---------------------------------------------------


def test_ab_test_report_on_the_pipeline(warehouse):
    report = warehouse.sql("select * from recsys.ab_test_report").pl()
    board = warehouse.sql("select model, ndcg_at_10 from recsys.leaderboard").pl()
    models = warehouse.sql("select distinct model from recsys.eval_recommendations").pl()
    champion = board.sort("ndcg_at_10", descending=True)["model"][0]
    n_models = models.height
    assert report.height == (n_models - 1) * 5
    assert set(report["control"]) == {champion}
    assert set(report["treatment"]) == set(models["model"]) - {champion}
    assert set(report["metric"]) == {"hit_at_10", "ndcg_at_10", "click", "add_to_cart", "purchase"}
    for column in ("welch_p_value", "paired_p_adjusted", "lift_ci_low", "mde_rel", "cuped_diff"):
        assert column in report.columns
    # the paired means are the stored metrics (same lists, same users)
    metrics = warehouse.sql("select model, ndcg_at_10, hit_rate_at_10 from recsys.model_metrics")
    stored = {r[0]: r[1:] for r in metrics.fetchall()}
    for row in report.filter(pl.col("metric") == "ndcg_at_10").iter_rows(named=True):
        assert row["paired_mean_control"] == pytest.approx(stored[champion][0], abs=1e-9)
        assert row["paired_mean_treatment"] == pytest.approx(stored[row["treatment"]][0], abs=1e-9)
    assert not report["srm_mismatch"].any()


def test_ctr_report_on_the_pipeline(warehouse):
    ctr = warehouse.sql("select * from recsys.ctr_report").pl()
    models = set(
        warehouse.sql("select distinct model from recsys.eval_recommendations").pl()["model"]
    )
    assert set(ctr["model"]) == models
    assert set(ctr["breakdown"]) == {"overall", "position", "category", "rfm_segment"}
    positions = ctr.filter(pl.col("breakdown") == "position")
    for model in models:
        assert sorted(positions.filter(pl.col("model") == model)["key"].cast(int)) == list(
            range(1, 11)
        )
    overall = ctr.filter(pl.col("breakdown") == "overall")
    summed = positions.group_by("model").agg(pl.col("shown").sum(), pl.col("clicks").sum())
    check = overall.join(summed, on="model", suffix="_pos")
    assert (check["shown"] == check["shown_pos"]).all()
    assert (check["clicks"] == check["clicks_pos"]).all()
    assert ctr["ctr"].is_between(0, 1).all()


def test_financial_impact_on_the_pipeline(warehouse):
    money = warehouse.sql("select * from recsys.financial_impact").pl()
    models = set(
        warehouse.sql("select distinct model from recsys.eval_recommendations").pl()["model"]
    )
    assert set(money["model"]) == models and money.height == len(models)
    popular = money.filter(pl.col("model") == "popular").row(0, named=True)
    assert popular["is_baseline"] and popular["incremental_per_1000_users"] == 0.0
    assert (money["revenue_per_1000_users_ci_low"] <= money["revenue_per_1000_users"]).all()
    assert (money["revenue_per_1000_users"] <= money["revenue_per_1000_users_ci_high"]).all()
    assumptions = json.loads(money["assumptions_json"][0])
    assert {"attribution_window", "exposed_share", "counterfactual"} <= set(assumptions)


def test_report_assets_carry_plots_and_tables_in_their_metadata(pipeline_run):
    from dagster import AssetKey

    _, instance = pipeline_run
    expected = {
        "ab_test_report": ("results", "lift_plot"),
        "ctr_report": ("by_position", "ctr_by_position_plot"),
        "financial_impact": ("results", "revenue_plot", "assumptions"),
    }
    for asset, keys in expected.items():
        event = instance.get_latest_materialization_event(AssetKey(asset))
        assert event is not None, asset
        metadata = event.asset_materialization.metadata
        for key in keys:
            assert key in metadata, (asset, key)
        plot = next(k for k in keys if k.endswith("_plot"))
        assert metadata[plot].value.startswith("![") and "data:image/png;base64," in (
            metadata[plot].value
        )


def test_a_report_k_beyond_the_ranks_read_is_a_clear_config_error():
    """The reports read the top REPORT_MAX_RANK of each list: a larger k would silently see
    shorter lists, so it is refused with the limit named."""
    from recsys_assets.defs.experiments._inputs import REPORT_MAX_RANK, check_list_positions

    for k in (1, 10, REPORT_MAX_RANK):
        check_list_positions(k)
    for k in (0, REPORT_MAX_RANK + 1, 100):
        with pytest.raises(ValueError, match=rf"config k={k}: .* 1 to {REPORT_MAX_RANK}"):
            check_list_positions(k)
