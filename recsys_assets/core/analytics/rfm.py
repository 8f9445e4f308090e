"""RFM (recency, frequency, monetary) segments of buying users.

Measures, for every user with at least one transaction at or before ``reference_ms``:

* ``recency_days`` — days (fractional) from the user's last transaction to ``reference_ms``;
  ``reference_ms`` defaults to the last timestamp in ``interactions`` (the end of the data).
  Transactions after an explicit ``reference_ms`` are ignored, so RFM "as of" a date never peeks.
* ``frequency`` — distinct ``transaction_id``s; transaction rows without an id count as one
  transaction per distinct timestamp.
* ``monetary`` — the sum, over purchased items (transaction rows, exact duplicates dropped), of the
  price *in force at purchase time*: the latest ``price`` snapshot of the item at or before the
  purchase timestamp (an as-of join). A later price change is never used. When the item has no
  price snapshot at or before the purchase, its price is unknown and the item is left out of
  ``monetary``; ``monetary_known_share`` (priced items / purchased items) reports how much of the
  user's basket was priced, so a low monetary value caused by missing prices can be told apart.

Scores are quintiles by rank, 5 best: ``score = 1 + floor(5 × share of users with a strictly
worse value)``. Users tied on a value share the score of the lowest position of their block (a
value most users share — frequency 1 in a typical shop — scores 1, not a middle score), and
the rule works for any number of users (1 user scores 1; 5 distinct users score 1 … 5).
Lower recency, higher frequency and higher monetary are better. ``rfm_score`` is the three
digits ``"RFM"`` as text, e.g. ``"545"``.

Segments follow the usual R × FM grid, with ``FM = round_half_up((F + M) / 2)``::

          FM=1                FM=2                FM=3                FM=4        FM=5
    R=5   New                 Potential loyalist  Potential loyalist  Champions   Champions
    R=4   Promising           Potential loyalist  Potential loyalist  Loyal       Loyal
    R=3   Hibernating         Hibernating         Need attention      Loyal       Loyal
    R=2   Hibernating         Hibernating         At risk             At risk     Cannot lose them
    R=1   Lost                Lost                At risk             At risk     Cannot lose them
"""

from __future__ import annotations

import polars as pl

from recsys_assets.core.analytics._checks import check_interactions, require_columns

MS_PER_DAY = 86_400_000

SEGMENTS = (
    "Champions",
    "Loyal",
    "Potential loyalist",
    "New",
    "Promising",
    "Need attention",
    "At risk",
    "Cannot lose them",
    "Hibernating",
    "Lost",
)

# Rows R = 5 … 1, columns FM = 1 … 5 (the grid in the module docstring).
SEGMENT_GRID = {
    5: ("New", "Potential loyalist", "Potential loyalist", "Champions", "Champions"),
    4: ("Promising", "Potential loyalist", "Potential loyalist", "Loyal", "Loyal"),
    3: ("Hibernating", "Hibernating", "Need attention", "Loyal", "Loyal"),
    2: ("Hibernating", "Hibernating", "At risk", "At risk", "Cannot lose them"),
    1: ("Lost", "Lost", "At risk", "At risk", "Cannot lose them"),
}

RFM_SCHEMA = {
    "user_id": pl.Int64,
    "recency_days": pl.Float64,
    "frequency": pl.Int64,
    "monetary": pl.Float64,
    "monetary_known_share": pl.Float64,
    "r_score": pl.Int32,
    "f_score": pl.Int32,
    "m_score": pl.Int32,
    "rfm_score": pl.Utf8,
    "segment": pl.Utf8,
}

SEGMENT_SUMMARY_SCHEMA = {
    "segment": pl.Utf8,
    "users": pl.Int64,
    "share": pl.Float64,
    "mean_recency_days": pl.Float64,
    "mean_frequency": pl.Float64,
    "mean_monetary": pl.Float64,
}


def quintile_score(values: pl.Expr, *, higher_is_better: bool = True) -> pl.Expr:
    """1 … 5 score: ``1 + floor(5 × share of rows with a strictly worse value)``."""
    goodness = values if higher_is_better else -values
    strictly_worse = goodness.rank(method="min").cast(pl.Int64) - 1
    return (1 + (5 * strictly_worse) // pl.len().cast(pl.Int64)).cast(pl.Int32)


def segment_of(r_score: pl.Expr, f_score: pl.Expr, m_score: pl.Expr) -> pl.Expr:
    """Segment name from the three scores (see the grid in the module docstring)."""
    fm = (f_score + m_score + 1) // 2
    by_code = {
        10 * r + fm_value: name
        for r, row in SEGMENT_GRID.items()
        for fm_value, name in enumerate(row, start=1)
    }
    return (10 * r_score + fm).replace_strict(by_code, return_dtype=pl.Utf8)


def price_at_purchase(purchases: pl.DataFrame, history: pl.DataFrame) -> pl.DataFrame:
    """``purchases`` (item_id, timestamp, …) with ``price``: the latest snapshot at or before it."""
    prices = (
        history.filter(
            (pl.col("property") == "price")
            & pl.col("value").is_not_null()
            & pl.col("value").is_finite()
        )
        .select("item_id", "timestamp", price=pl.col("value").cast(pl.Float64))
        .sort("timestamp")
    )
    # Both sides are sorted on the whole timestamp column, hence within every item group too;
    # polars cannot verify that itself when ``by`` is given.
    return purchases.sort("timestamp").join_asof(
        prices,
        on="timestamp",
        by="item_id",
        strategy="backward",
        allow_exact_matches=True,  # a snapshot taken at the purchase instant is in force
        check_sortedness=False,
    )


def rfm_segments(
    interactions: pl.DataFrame, history: pl.DataFrame, reference_ms: int | None = None
) -> pl.DataFrame:
    """One row per buying user: R/F/M values, scores, ``rfm_score`` and ``segment``.

    Columns: ``user_id, recency_days, frequency, monetary, monetary_known_share, r_score,
    f_score, m_score, rfm_score, segment``, sorted by ``user_id``. See the module docstring for
    the definitions (price as of purchase time, missing prices, tie-aware quintiles).
    """
    check_interactions(interactions, ("user_id", "item_id", "event", "timestamp", "transaction_id"))
    require_columns(history, ("item_id", "timestamp", "property", "value"), "history")
    if reference_ms is None:
        if interactions.height == 0:
            return pl.DataFrame(schema=RFM_SCHEMA)
        reference_ms = int(interactions.get_column("timestamp").max())

    purchases = (
        interactions.filter(
            (pl.col("event") == "transaction") & (pl.col("timestamp") <= reference_ms)
        )
        .select("user_id", "item_id", "transaction_id", "timestamp")
        .unique()
    )
    if purchases.height == 0:
        return pl.DataFrame(schema=RFM_SCHEMA)
    priced = price_at_purchase(purchases, history)

    has_id = pl.col("transaction_id").is_not_null()
    users = priced.group_by("user_id").agg(
        recency_days=(reference_ms - pl.col("timestamp").max()) / MS_PER_DAY,
        frequency=pl.col("transaction_id").filter(has_id).n_unique()
        + pl.col("timestamp").filter(~has_id).n_unique(),
        monetary=pl.col("price").sum(),
        monetary_known_share=pl.col("price").is_not_null().mean(),
    )
    scored = users.with_columns(
        r_score=quintile_score(pl.col("recency_days"), higher_is_better=False),
        f_score=quintile_score(pl.col("frequency")),
        m_score=quintile_score(pl.col("monetary")),
    )
    return (
        scored.with_columns(
            rfm_score=pl.concat_str(pl.col("r_score"), pl.col("f_score"), pl.col("m_score")),
            segment=segment_of(pl.col("r_score"), pl.col("f_score"), pl.col("m_score")),
        )
        .cast(RFM_SCHEMA)
        .select(list(RFM_SCHEMA))
        .sort("user_id")
    )


def rfm_segment_summary(rfm: pl.DataFrame) -> pl.DataFrame:
    """Users, share of buyers and mean R/F/M per segment; all ten segments, in ``SEGMENTS`` order.

    Segments without users have ``users = 0``, ``share = 0`` and null means.
    """
    require_columns(rfm, ("segment", "recency_days", "frequency", "monetary"), "rfm")
    total = rfm.height
    stats = rfm.group_by("segment").agg(
        users=pl.len(),
        mean_recency_days=pl.col("recency_days").mean(),
        mean_frequency=pl.col("frequency").cast(pl.Float64).mean(),
        mean_monetary=pl.col("monetary").mean(),
    )
    unknown = stats.filter(~pl.col("segment").is_in(list(SEGMENTS)))
    if unknown.height:
        raise ValueError(f"rfm: unknown 'segment' value {unknown['segment'][0]!r}")
    return (
        pl.DataFrame({"segment": list(SEGMENTS)})
        .join(stats, on="segment", how="left")
        .with_columns(pl.col("users").fill_null(0))
        .with_columns(share=pl.col("users") / total if total else pl.lit(0.0))
        .cast(SEGMENT_SUMMARY_SCHEMA)
        .select(list(SEGMENT_SUMMARY_SCHEMA))
    )
