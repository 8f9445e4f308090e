"""Money: revenue of recommended items that were then bought, and the increment over a baseline.

Attribution (an offline, last-list model; every assumption is returned next to the table):

- a purchase (a test-period transaction row, exact duplicates dropped) is attributed to a model
  when the buyer is an evaluated user and the item is in that model's top-``k`` list for them,
  and it happens within the attribution window after the test period starts;
- its value is the item's price *in force at the purchase* (the latest price change in
  ``item_property_history`` at or before it, as RFM does); a purchase whose price is unknown is
  counted in ``attributed_purchases`` but adds no revenue (``priced_share`` says how many had
  one);
- revenue per 1,000 users is over the evaluated users (history before the test period and a new
  item in it), every model over the same users;
- the counterfactual is the baseline model's list (Popularity, what a shop shows without
  personalisation): the incremental revenue of a model is its revenue minus the baseline's on
  the same users, scaled to ``monthly_users × exposed_share``;
- intervals are paired percentile bootstraps over users (all models resampled together).

The attribution is an upper bound of causal revenue: some of these purchases would have
happened without the list; comparing with the baseline's attributed revenue cancels the part of
that bias that both lists share.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from recsys_assets.core.analytics._checks import require_columns
from recsys_assets.core.analytics.rfm import MS_PER_DAY, price_at_purchase
from recsys_assets.core.evaluation.holdout import holdout_targets
from recsys_assets.core.experiments.bootstrap import bootstrap_means, percentile_interval
from recsys_assets.core.experiments.outcomes import (
    HISTORY_SPLITS,
    TARGET_SPLIT,
    check_inputs,
    shown_lists,
)


@dataclass(frozen=True)
class MoneySettings:
    k: int = 10
    attribution_window_days: float | None = None  # None: the whole test period
    monthly_users: int = 100_000  # comparable users (returning, with history) per month
    exposed_share: float = 1.0  # share of that traffic that sees the recommendations
    baseline: str = "popular"
    n_bootstrap: int = 2000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if self.attribution_window_days is not None and self.attribution_window_days <= 0:
            raise ValueError(
                f"attribution_window_days must be positive or None, got "
                f"{self.attribution_window_days}"
            )
        if self.monthly_users < 0:
            raise ValueError(f"monthly_users must be >= 0, got {self.monthly_users}")
        if not 0 <= self.exposed_share <= 1:
            raise ValueError(f"exposed_share must be in [0, 1], got {self.exposed_share}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")


FINANCIAL_SCHEMA = {
    "model": pl.Utf8,
    "is_baseline": pl.Boolean,
    "users": pl.Int64,
    "buyers": pl.Int64,
    "attributed_purchases": pl.Int64,
    "priced_share": pl.Float64,
    "revenue": pl.Float64,
    "revenue_per_1000_users": pl.Float64,
    "revenue_per_1000_users_ci_low": pl.Float64,
    "revenue_per_1000_users_ci_high": pl.Float64,
    "incremental_per_1000_users": pl.Float64,
    "incremental_per_1000_users_ci_low": pl.Float64,
    "incremental_per_1000_users_ci_high": pl.Float64,
    "monthly_incremental_revenue": pl.Float64,
    "monthly_incremental_revenue_ci_low": pl.Float64,
    "monthly_incremental_revenue_ci_high": pl.Float64,
    "assumptions_json": pl.Utf8,
}


def attribution_window(splits: pl.DataFrame, window_days: float | None) -> tuple[int, int]:
    """``(start_ms, end_ms)`` of attribution: the test period's start, plus the window."""
    test = splits.filter(pl.col("split") == TARGET_SPLIT)["timestamp"]
    if test.len() == 0:
        return 0, -1
    start, last = int(test.min()), int(test.max())
    end = last if window_days is None else min(last, start + int(window_days * MS_PER_DAY))
    return start, end


def attributed_purchases(
    recommendations: pl.DataFrame,
    splits: pl.DataFrame,
    history: pl.DataFrame,
    settings: MoneySettings,
) -> pl.DataFrame:
    """``model, user_id, item_id, timestamp, price`` of every attributed purchase."""
    check_inputs(recommendations, splits, settings.k)
    require_columns(splits, ("timestamp",), "splits")
    require_columns(history, ("item_id", "timestamp", "property", "value"), "item_property_history")
    start, end = attribution_window(splits, settings.attribution_window_days)
    users = holdout_targets(splits, HISTORY_SPLITS, TARGET_SPLIT).select("user_id").unique()
    tx_id = pl.col("transaction_id") if "transaction_id" in splits.columns else pl.lit(None)
    purchases = (
        splits.filter(
            (pl.col("split") == TARGET_SPLIT)
            & (pl.col("event") == "transaction")
            & pl.col("timestamp").is_between(start, end)
        )
        .select(
            pl.col("user_id").cast(pl.Int64),
            pl.col("item_id").cast(pl.Int64),
            pl.col("timestamp").cast(pl.Int64),
            tx_id.cast(pl.Int64).alias("transaction_id"),
        )
        .unique()
    )
    shown = shown_lists(recommendations, settings.k).join(users, on="user_id", how="semi")
    matched = shown.select("model", "user_id", "item_id").join(
        purchases, on=["user_id", "item_id"], how="inner"
    )
    priced = price_at_purchase(matched, history)
    return priced.select("model", "user_id", "item_id", "timestamp", "price").sort(
        "model", "user_id", "timestamp", "item_id"
    )


def revenue_per_user(
    attributed: pl.DataFrame, user_ids: np.ndarray, models: list[str]
) -> np.ndarray:
    """``(n_users, n_models)`` attributed revenue (unknown prices add 0)."""
    per_user = attributed.group_by("model", "user_id").agg(
        revenue=pl.col("price").fill_null(0).sum()
    )
    grid = pl.DataFrame({"model": models}).join(
        pl.DataFrame({"user_id": np.asarray(user_ids, dtype=np.int64)}), how="cross"
    )
    values = (
        grid.join(per_user, on=["model", "user_id"], how="left", maintain_order="left")
        .get_column("revenue")
        .fill_null(0.0)
        .to_numpy()
    )
    return np.ascontiguousarray(values.reshape(len(models), len(user_ids)).T, dtype=np.float64)


def financial_impact(
    recommendations: pl.DataFrame,
    splits: pl.DataFrame,
    history: pl.DataFrame,
    settings: MoneySettings,
) -> tuple[pl.DataFrame, dict]:
    """The ``financial_impact`` table (one row per model, best revenue first) and the
    assumptions it rests on (also in every row's ``assumptions_json``)."""
    attributed = attributed_purchases(recommendations, splits, history, settings)
    users = (
        holdout_targets(splits, HISTORY_SPLITS, TARGET_SPLIT)["user_id"].unique().sort().to_numpy()
    )
    models = sorted(recommendations["model"].unique().to_list())
    revenue = revenue_per_user(attributed, users, models)
    boot = bootstrap_means(revenue, settings.n_bootstrap, settings.seed) * 1000.0
    low, high = percentile_interval(boot, settings.confidence)
    point = revenue.mean(axis=0) * 1000.0 if len(users) else np.full(len(models), np.nan)

    has_baseline = settings.baseline in models
    if has_baseline:
        b = models.index(settings.baseline)
        increments = boot - boot[:, [b]]
        inc_low, inc_high = percentile_interval(increments, settings.confidence)
        inc_point = point - point[b]
    else:
        inc_low = inc_high = inc_point = np.full(len(models), np.nan)
    # per 1,000 users -> per month: x monthly_users / 1000 x exposed share
    monthly_factor = settings.monthly_users / 1000.0 * settings.exposed_share

    start, end = attribution_window(splits, settings.attribution_window_days)
    assumptions = describe_assumptions(settings, start, end, len(users), has_baseline)
    counts = attributed.group_by("model").agg(
        buyers=pl.col("user_id").n_unique(),
        attributed_purchases=pl.len(),
        priced_share=pl.col("price").is_not_null().mean(),
    )
    table = (
        pl.DataFrame(
            {
                "model": models,
                "is_baseline": [m == settings.baseline for m in models],
                "users": [len(users)] * len(models),
                "revenue": revenue.sum(axis=0),
                "revenue_per_1000_users": point,
                "revenue_per_1000_users_ci_low": low,
                "revenue_per_1000_users_ci_high": high,
                "incremental_per_1000_users": inc_point,
                "incremental_per_1000_users_ci_low": inc_low,
                "incremental_per_1000_users_ci_high": inc_high,
                "monthly_incremental_revenue": inc_point * monthly_factor,
                "monthly_incremental_revenue_ci_low": inc_low * monthly_factor,
                "monthly_incremental_revenue_ci_high": inc_high * monthly_factor,
            },
            strict=False,
        )
        .join(counts, on="model", how="left")
        .with_columns(
            pl.col("buyers").fill_null(0),
            pl.col("attributed_purchases").fill_null(0),
            assumptions_json=pl.lit(json.dumps(assumptions)),
        )
        .sort("revenue_per_1000_users", descending=True, nulls_last=True)
    )
    return table.select(list(FINANCIAL_SCHEMA)).cast(FINANCIAL_SCHEMA), assumptions


def describe_assumptions(
    settings: MoneySettings, start_ms: int, end_ms: int, n_users: int, has_baseline: bool
) -> dict:
    window_days = max(0.0, (end_ms - start_ms) / MS_PER_DAY)
    return {
        **asdict(settings),
        "attribution_window": (
            f"purchases from the test period's start for {window_days:.1f} days "
            + ("(the whole test period)" if settings.attribution_window_days is None else "")
        ).strip(),
        "attribution_window_start_ms": start_ms,
        "attribution_window_end_ms": end_ms,
        "attribution_rule": (
            f"a purchase counts for a model when the item was in that model's top-{settings.k} "
            "list for the same user (an upper bound of caused revenue: no discount for "
            "purchases that would have happened anyway)"
        ),
        "price": "price in force at the purchase (latest item_property_history change at or "
        "before it); purchases without a known price add no revenue",
        "users": f"{n_users} evaluated users (history before the test period, a new item in it)",
        "counterfactual": (
            f"the shop shows the '{settings.baseline}' list: incremental = model - baseline on "
            "the same users"
            if has_baseline
            else f"baseline '{settings.baseline}' has no lists: no incremental revenue"
        ),
        "traffic": (
            f"{settings.monthly_users} comparable users per month, {settings.exposed_share:.0%} "
            "of them exposed; each user's purchases over one attribution window count for the "
            "month"
        ),
        "interval": f"{settings.confidence:.0%} paired percentile bootstrap over users, "
        f"{settings.n_bootstrap} resamples",
    }
