"""Conversion funnel: view → add-to-cart → transaction.

One row per *scope* and *key*:

* ``overall`` (key ``''``) — the whole table;
* ``day`` (key ``'YYYY-MM-DD'``, the UTC date of the event) — one row per day with events;
* ``category`` (key = the category id as text) — the ``top_categories`` categories with the most
  views, taken from the catalogue's ``category_id`` (or ``root_category_id`` when asked);
  events on items without a known category appear in no category row.

Counts:

* ``views``, ``addtocarts``, ``transactions`` — events of each type in the scope;
* ``viewers``, ``carters``, ``buyers`` — distinct users with at least one event of that type.

Rates are measured on distinct (user, item) pairs, not on raw events, because one user often views
an item many times before buying it once; event ratios would then mostly measure re-viewing.
Within a scope, a pair *reaches* a stage when it has at least one event of that type:

* ``view_to_cart``     = pairs with a view and an add-to-cart / pairs with a view;
* ``cart_to_purchase`` = pairs with an add-to-cart and a transaction / pairs with an add-to-cart;
* ``view_to_purchase`` = pairs with a view and a transaction / pairs with a view.

Numerators require the earlier stage too, so every rate lies in [0, 1] even though the raw data
has purchases without a recorded view. A rate whose denominator is zero is null. On the ``day``
scope the pairs are (user, item, day): a pair that views on one day and buys on the next converts
on neither day — the daily rows show same-day conversion.
"""

from __future__ import annotations

import polars as pl

from recsys_assets.core.analytics._checks import check_interactions, require_columns

FUNNEL_SCHEMA = {
    "scope": pl.Utf8,
    "key": pl.Utf8,
    "views": pl.Int64,
    "addtocarts": pl.Int64,
    "transactions": pl.Int64,
    "viewers": pl.Int64,
    "carters": pl.Int64,
    "buyers": pl.Int64,
    "view_to_cart": pl.Float64,
    "cart_to_purchase": pl.Float64,
    "view_to_purchase": pl.Float64,
}

_IS_VIEW = pl.col("event") == "view"
_IS_CART = pl.col("event") == "addtocart"
_IS_BUY = pl.col("event") == "transaction"


def _ratio(numerator: str, denominator: str) -> pl.Expr:
    return (
        pl.when(pl.col(denominator) > 0)
        .then(pl.col(numerator) / pl.col(denominator))
        .otherwise(None)
        .cast(pl.Float64)
    )


def _funnel_by_key(events: pl.DataFrame) -> pl.DataFrame:
    """Funnel rows for ``events`` (columns key, user_id, item_id, event), one per key."""
    counts = events.group_by("key").agg(
        views=_IS_VIEW.sum(),
        addtocarts=_IS_CART.sum(),
        transactions=_IS_BUY.sum(),
        viewers=pl.col("user_id").filter(_IS_VIEW).n_unique(),
        carters=pl.col("user_id").filter(_IS_CART).n_unique(),
        buyers=pl.col("user_id").filter(_IS_BUY).n_unique(),
    )
    pairs = events.group_by("key", "user_id", "item_id").agg(
        v=_IS_VIEW.any(), c=_IS_CART.any(), t=_IS_BUY.any()
    )
    stages = pairs.group_by("key").agg(
        pairs_v=pl.col("v").sum(),
        pairs_vc=(pl.col("v") & pl.col("c")).sum(),
        pairs_c=pl.col("c").sum(),
        pairs_ct=(pl.col("c") & pl.col("t")).sum(),
        pairs_vt=(pl.col("v") & pl.col("t")).sum(),
    )
    return counts.join(stages, on="key", how="left").select(
        "key",
        *(pl.col(c).cast(pl.Int64) for c in list(FUNNEL_SCHEMA)[2:8]),
        view_to_cart=_ratio("pairs_vc", "pairs_v"),
        cart_to_purchase=_ratio("pairs_ct", "pairs_c"),
        view_to_purchase=_ratio("pairs_vt", "pairs_v"),
    )


def conversion_funnel(
    interactions: pl.DataFrame,
    catalog: pl.DataFrame,
    top_categories: int = 10,
    *,
    category_column: str = "category_id",
) -> pl.DataFrame:
    """Funnel counts and pair conversion rates overall, per UTC day and per top category.

    Returns columns ``scope, key, views, addtocarts, transactions, viewers, carters, buyers,
    view_to_cart, cart_to_purchase, view_to_purchase`` (see the module docstring). Rows are
    ordered overall, then days ascending, then categories by views descending.
    """
    check_interactions(interactions, ("user_id", "item_id", "event", "timestamp"))
    require_columns(catalog, ("item_id", category_column), "catalog")
    if top_categories < 0:
        raise ValueError(f"top_categories must be >= 0, got {top_categories}")
    duplicated = ~catalog.get_column("item_id").is_first_distinct()
    if duplicated.any():
        row = int(duplicated.arg_true()[0])
        raise ValueError(f"catalog: duplicate 'item_id' {catalog['item_id'][row]} at row {row}")

    events = interactions.select("user_id", "item_id", "event", "timestamp")
    overall = _funnel_by_key(events.with_columns(key=pl.lit("")))
    if overall.height == 0:  # keep the overall row even for an empty table
        overall = pl.DataFrame(
            {"key": [""], **{c: [0] for c in list(FUNNEL_SCHEMA)[2:8]}}
        ).with_columns(pl.lit(None, pl.Float64).alias(c) for c in list(FUNNEL_SCHEMA)[8:])
    daily = _funnel_by_key(
        events.with_columns(key=pl.from_epoch("timestamp", time_unit="ms").dt.date().cast(pl.Utf8))
    ).sort("key")

    categorised = events.join(
        catalog.select("item_id", category=pl.col(category_column)), on="item_id", how="inner"
    ).filter(pl.col("category").is_not_null())
    top = (
        categorised.filter(_IS_VIEW)
        .group_by("category")
        .agg(n=pl.len())
        .sort(["n", "category"], descending=[True, False])
        .head(top_categories)
        .get_column("category")
    )
    by_category = _funnel_by_key(
        categorised.filter(pl.col("category").is_in(top.implode())).with_columns(
            key=pl.col("category").cast(pl.Utf8)
        )
    ).sort(["views", "key"], descending=[True, False])

    parts = [
        part.with_columns(scope=pl.lit(scope)).select(list(FUNNEL_SCHEMA))
        for scope, part in (("overall", overall), ("day", daily), ("category", by_category))
    ]
    return pl.concat(parts, how="vertical").cast(FUNNEL_SCHEMA)
