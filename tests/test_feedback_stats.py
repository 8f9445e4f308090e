"""The delta method for CTR and the online A/B table (pure code, known answers)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from scipy import stats as sps

from recsys_assets.core.experiments.online import (
    ALL_DAYS,
    FEEDBACK_SCHEMA,
    NO_EXPERIMENT,
    feedback_frame,
    online_ab_table,
)
from recsys_assets.core.experiments.stats import (
    ratio_delta_variance,
    ratio_diff_delta,
    welch_test,
)


def test_delta_variance_equals_the_linearised_per_user_variance():
    rng = np.random.default_rng(0)
    impressions = rng.integers(0, 30, 500).astype(float)
    clicks = rng.binomial(impressions.astype(int), rng.beta(1, 9, 500)).astype(float)
    ratio, var = ratio_delta_variance(clicks, impressions)
    assert ratio == pytest.approx(clicks.sum() / impressions.sum())
    # Independent form: the variance of the mean of the influence values (x - R y) / mean(y).
    influence = (clicks - ratio * impressions) / impressions.mean()
    assert var == pytest.approx(influence.var(ddof=1) / influence.size, rel=1e-12)


def test_one_impression_per_user_reduces_to_welch():
    rng = np.random.default_rng(1)
    a, b = rng.binomial(1, 0.1, 800).astype(float), rng.binomial(1, 0.13, 900).astype(float)
    delta = ratio_diff_delta(a, np.ones_like(a), b, np.ones_like(b))
    welch = welch_test(a, b)
    assert delta.diff == pytest.approx(welch.diff)
    assert delta.std_error == pytest.approx(welch.std_error, rel=1e-12)
    half = sps.norm.ppf(0.975) * delta.std_error
    assert (delta.ci_low, delta.ci_high) == pytest.approx((delta.diff - half, delta.diff + half))


def _clustered_arm(rng, n_users):
    """Users differ in taste (CTR ~ Beta) and in how many impressions they see."""
    impressions = rng.geometric(0.08, n_users)
    clicks = rng.binomial(impressions, rng.beta(0.5, 4.5, n_users))
    return clicks.astype(float), impressions.astype(float)


def test_delta_interval_covers_a_null_difference_at_its_level_where_the_naive_one_does_not():
    rng = np.random.default_rng(2)
    covered = naive_covered = 0
    runs = 300
    for _ in range(runs):  # A/A experiments: the true difference is 0
        (xc, yc), (xt, yt) = _clustered_arm(rng, 400), _clustered_arm(rng, 400)
        result = ratio_diff_delta(xc, yc, xt, yt)
        covered += result.ci_low <= 0 <= result.ci_high
        # impressions taken as independent Bernoulli trials: too narrow for clustered users
        pc, pt = xc.sum() / yc.sum(), xt.sum() / yt.sum()
        se = np.sqrt(pc * (1 - pc) / yc.sum() + pt * (1 - pt) / yt.sum())
        naive_covered += abs(pt - pc) <= 1.96 * se
    assert 0.91 <= covered / runs <= 0.985
    assert naive_covered / runs < 0.85


def test_delta_method_detects_a_planted_lift():
    rng = np.random.default_rng(3)
    yc, yt = rng.geometric(0.1, 3000), rng.geometric(0.1, 3000)
    xc, xt = rng.binomial(yc, 0.05), rng.binomial(yt, 0.07)
    result = ratio_diff_delta(xc, yc, xt, yt)
    assert result.ci_low > 0 and result.p_value < 1e-3
    assert result.lift == pytest.approx(0.4, abs=0.15)


def test_degenerate_arms_give_nan_not_an_error():
    result = ratio_diff_delta([1.0], [2.0], [0.0, 0.0], [0.0, 0.0])
    assert np.isnan(result.std_error) or np.isnan(result.ci_low)
    with pytest.raises(ValueError, match="differ in length"):
        ratio_delta_variance([1.0, 2.0], [1.0])


def _events(rows):
    frame = pl.DataFrame(
        rows, schema=["user_id", "event", "experiment", "arm", "model", "day"], orient="row"
    )
    n = frame.height
    return (
        frame.with_columns(
            stream_id=pl.Series([f"{i}-0" for i in range(n)]),
            timestamp=pl.lit(0, pl.Int64),
            item_id=pl.lit(1, pl.Int64),
            version=pl.lit("1"),
            rank=pl.lit(None, pl.Int32),
        )
        .select(list(FEEDBACK_SCHEMA))
        .cast(FEEDBACK_SCHEMA)
    )


def test_online_table_counts_ctr_welch_and_srm():
    d1, d2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)
    rows = []
    rng = np.random.default_rng(4)
    # control users 0..299, treatment 1000..1099: a 3:1 split where 1:1 was intended
    for user in range(300):
        shown = int(rng.integers(1, 6))
        rows += [(user, "impression", "e", "control", "als", d1)] * shown
        rows += [(user, "click", "e", "control", "als", d1)] * int(rng.integers(0, shown + 1) // 3)
    for user in range(1000, 1100):
        shown = int(rng.integers(1, 6))
        day = d1 if user % 2 else d2
        rows += [(user, "impression", "e", "treatment", "knn", day)] * shown
        rows += [(user, "click", "e", "treatment", "knn", day)] * int(rng.integers(0, shown + 1))
    rows += [(7, "impression", "", "", "als", d2), (7, "click", "", "", "als", d2)]
    rows += [(7, "addtocart", "e", "control", "als", d2)]  # neither impression nor click
    events = _events(rows)
    table = online_ab_table(events, treatment_share=0.5)

    feedback = events.filter(pl.col("experiment") == "e")
    for arm in ("control", "treatment"):
        row = table.filter((pl.col("arm") == arm) & (pl.col("day") == ALL_DAYS)).row(0, named=True)
        mine = feedback.filter(pl.col("arm") == arm)
        assert row["impressions"] == (mine["event"] == "impression").sum()
        assert row["clicks"] == (mine["event"] == "click").sum()
        assert row["ctr"] == pytest.approx(row["clicks"] / row["impressions"])
        assert (
            row["users"]
            == mine.filter(pl.col("event").is_in(["impression", "click"]))["user_id"].n_unique()
        )
    day1 = table.filter((pl.col("day") == "2024-01-01") & (pl.col("arm") == "treatment")).row(
        0, named=True
    )
    assert day1["users"] == 50
    overall = table.filter((pl.col("day") == ALL_DAYS) & (pl.col("arm") == "treatment")).row(
        0, named=True
    )
    assert overall["srm_mismatch"] and overall["srm_p_value"] < 1e-6
    assert table.filter(pl.col("arm") == "control")["ctr_diff"].is_null().all()
    # Welch on per-user CTR, computed here from the events directly
    per_user = (
        feedback.group_by("arm", "user_id")
        .agg(
            (pl.col("event") == "click").sum().alias("c"),
            (pl.col("event") == "impression").sum().alias("i"),
        )
        .filter(pl.col("i") > 0)
        .with_columns(ctr=pl.col("c") / pl.col("i"))
    )
    expected = sps.ttest_ind(
        per_user.filter(pl.col("arm") == "treatment")["ctr"].to_numpy(),
        per_user.filter(pl.col("arm") == "control")["ctr"].to_numpy(),
        equal_var=False,
    )
    assert overall["welch_p_value"] == pytest.approx(expected.pvalue)
    assert overall["ctr_diff_ci_low"] < overall["ctr_diff"] < overall["ctr_diff_ci_high"]
    # outside any experiment: per model, no statistics
    none = table.filter(pl.col("experiment") == NO_EXPERIMENT)
    assert set(none["arm"]) == {"als"} and none["ctr_diff"].is_null().all()


def test_feedback_frame_parses_and_rejects_with_the_field_named():
    good = {b"user_id": b"5", b"item_id": b"9", b"event": b"click", b"timestamp": b"1700000000000"}
    good |= {b"model": b"als", b"version": b"3", b"experiment": b"", b"arm": b"", b"rank": b"2"}
    entries = [
        (b"1-0", good),
        (b"2-0", {**good, b"user_id": b"abc"}),
        (b"3-0", {**good, b"event": b"like"}),
        (b"4-0", {**good, b"rank": b"x"}),
        (b"5-0", {**good, b"rank": b""}),
    ]
    frame, rejected = feedback_frame(entries)
    assert frame["stream_id"].to_list() == ["1-0", "5-0"]
    assert frame["day"][0] == dt.date(2023, 11, 14) and frame["rank"].to_list() == [2, None]
    assert [(r.stream_id, r.reason.split(":")[0]) for r in rejected] == [
        ("2-0", "user_id"),
        ("3-0", "event"),
        ("4-0", "rank"),
    ]
