"""Offline click-through, add-to-cart and purchase rates of the shown top-K recommendations.

A *shown* recommendation is one of the top-``k`` items of a model's stored list for an
evaluated user. Its click (add-to-cart, purchase) flag is 1 when the same user viewed (carted,
bought) that item in the test period. Rates are flags / shown. One long table::

    model, breakdown, key, users, shown, clicks, carts, purchases, ctr, cart_rate, purchase_rate

``breakdown`` is one of:

- ``overall`` (``key`` = ``all``);
- ``position`` (``key`` = ``1`` … ``k``, the rank in the list);
- ``category`` (``key`` = the item's root category id in the catalogue as of the test start,
  ``unknown`` when the item has none);
- ``rfm_segment`` (``key`` = the user's RFM segment *as of the test start*, from purchases in
  train + valid only — segments over the whole data would use the very test purchases the rates
  count; ``no purchase before test`` for users who had bought nothing).
"""

from __future__ import annotations

import polars as pl

from recsys_assets.core.analytics._checks import require_columns
from recsys_assets.core.evaluation.holdout import holdout_targets
from recsys_assets.core.experiments.outcomes import (
    HISTORY_SPLITS,
    TARGET_SPLIT,
    check_inputs,
    shown_lists,
    with_event_flags,
)

BREAKDOWNS = ("overall", "position", "category", "rfm_segment")
NO_SEGMENT = "no purchase before test"
UNKNOWN_CATEGORY = "unknown"

CTR_SCHEMA = {
    "model": pl.Utf8,
    "breakdown": pl.Utf8,
    "key": pl.Utf8,
    "users": pl.Int64,
    "shown": pl.Int64,
    "clicks": pl.Int64,
    "carts": pl.Int64,
    "purchases": pl.Int64,
    "ctr": pl.Float64,
    "cart_rate": pl.Float64,
    "purchase_rate": pl.Float64,
}


def pre_test_segments(splits: pl.DataFrame, history: pl.DataFrame) -> pl.DataFrame:
    """``user_id, segment``: RFM segments from train + valid purchases, as of the test start."""
    from recsys_assets.core.analytics.rfm import rfm_segments

    require_columns(splits, ("user_id", "item_id", "event", "timestamp", "split"), "splits")
    before = splits.filter(pl.col("split").is_in(list(HISTORY_SPLITS)))
    test = splits.filter(pl.col("split") == TARGET_SPLIT)
    if before.height == 0 or test.height == 0:
        return pl.DataFrame(schema={"user_id": pl.Int64, "segment": pl.Utf8})
    if "transaction_id" not in before.columns:
        before = before.with_columns(transaction_id=pl.lit(None, pl.Int64))
    reference = int(test["timestamp"].min()) - 1  # the last instant before the test period
    segments = rfm_segments(before, history, reference_ms=reference)
    return segments.select(pl.col("user_id").cast(pl.Int64), "segment")


def ctr_table(
    recommendations: pl.DataFrame,
    splits: pl.DataFrame,
    item_catalog: pl.DataFrame,
    segments: pl.DataFrame,
    k: int = 10,
) -> pl.DataFrame:
    """The long CTR table (see the module docstring), sorted by model, breakdown, key."""
    check_inputs(recommendations, splits, k)
    require_columns(item_catalog, ("item_id", "root_category_id"), "item_catalog")
    require_columns(segments, ("user_id", "segment"), "segments")
    users = holdout_targets(splits, HISTORY_SPLITS, TARGET_SPLIT).select("user_id").unique()
    shown = with_event_flags(
        shown_lists(recommendations, k).join(users, on="user_id", how="semi"), splits
    )
    categories = item_catalog.select(
        pl.col("item_id").cast(pl.Int64),
        category=pl.col("root_category_id").cast(pl.Utf8),
    ).unique("item_id")
    shown = (
        shown.join(categories, on="item_id", how="left")
        .join(segments.unique("user_id"), on="user_id", how="left")
        .with_columns(
            overall=pl.lit("all"),
            position=pl.col("rank").cast(pl.Utf8),
            category=pl.col("category").fill_null(UNKNOWN_CATEGORY),
            rfm_segment=pl.col("segment").fill_null(NO_SEGMENT),
        )
    )
    parts = [
        shown.group_by("model", pl.col(breakdown).alias("key"))
        .agg(
            users=pl.col("user_id").n_unique(),
            shown=pl.len(),
            clicks=pl.col("click").sum(),
            carts=pl.col("add_to_cart").sum(),
            purchases=pl.col("purchase").sum(),
        )
        .with_columns(breakdown=pl.lit(breakdown))
        for breakdown in BREAKDOWNS
    ]
    table = pl.concat(parts, how="diagonal") if shown.height else pl.DataFrame(schema=CTR_SCHEMA)
    rates = {"ctr": "clicks", "cart_rate": "carts", "purchase_rate": "purchases"}
    table = table.with_columns(
        (pl.col(count) / pl.col("shown")).alias(rate) for rate, count in rates.items()
    )
    # positions sort as numbers, the rest as text
    order_key = pl.when(pl.col("breakdown") == "position").then(
        pl.col("key").cast(pl.Int64, strict=False)
    )
    breakdown_order = pl.col("breakdown").replace_strict(
        {b: i for i, b in enumerate(BREAKDOWNS)}, return_dtype=pl.Int32
    )
    return (
        table.sort(["model", breakdown_order, order_key, "key"], nulls_last=True)
        .select(list(CTR_SCHEMA))
        .cast(CTR_SCHEMA)
    )
