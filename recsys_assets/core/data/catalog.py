"""Category tree, interpreted item-property history, and the item catalog as of an instant.

Item properties are weekly snapshots whose values change over time, so every lookup takes a
time: :func:`item_catalog` gives each item's latest known values at or before ``as_of_ms``
(features built at the train cutoff never see later prices), and :func:`values_at` gives the
value in force at arbitrary (item, time) pairs, e.g. the price at purchase time for RFM.
"""

from __future__ import annotations

import polars as pl

from recsys_assets.core.data.retailrocket import RetailRocketFormatError, validate_category_tree
from recsys_assets.core.data.schemas import (
    CATEGORY_TREE_TABLE_SCHEMA,
    ITEM_CATALOG_SCHEMA,
    PROPERTY_AVAILABLE,
    PROPERTY_CATEGORY,
    PROPERTY_HISTORY_NAMES,
    PROPERTY_HISTORY_SCHEMA,
    PROPERTY_PRICE,
)

PROPERTIES_SOURCE = "item_properties_part*.csv"  # where property values come from, for errors

# Raw property name -> history name. Property 790 is a single number: the price.
_INTERPRETED = {
    PROPERTY_CATEGORY: "categoryid",
    PROPERTY_PRICE: "price",
    PROPERTY_AVAILABLE: "available",
}
assert set(_INTERPRETED.values()) == set(PROPERTY_HISTORY_NAMES)


# --- category tree -------------------------------------------------------------------------------


def category_tree_table(tree: pl.DataFrame) -> pl.DataFrame:
    """Depth, root and ancestor list (self first, root last) for every category.

    ``tree`` has ``categoryid``/``parentid`` (RAW_CATEGORY_TREE_SCHEMA). A parent that is not
    listed itself is added as a root, so every ancestor id has its own row. Built one depth
    level at a time (a handful of joins), not row by row.
    """
    edges = tree.select(
        category_id=pl.col("categoryid").cast(pl.Int64), parent_id=pl.col("parentid").cast(pl.Int64)
    ).unique(maintain_order=True)
    validate_category_tree(edges.rename({"category_id": "categoryid", "parent_id": "parentid"}))
    unlisted = (
        edges.filter(
            pl.col("parent_id").is_not_null()
            & ~pl.col("parent_id").is_in(edges["category_id"].implode())
        )
        .select(category_id=pl.col("parent_id"), parent_id=pl.lit(None, pl.Int64))
        .unique()
    )
    edges = pl.concat([edges, unlisted])

    frontier = edges.filter(pl.col("parent_id").is_null()).with_columns(
        depth=pl.lit(0, pl.Int32),
        root_id=pl.col("category_id"),
        ancestors=pl.concat_list(pl.col("category_id")),
    )
    levels = [frontier]
    while frontier.height:
        frontier = edges.join(
            frontier.select(
                parent_id=pl.col("category_id"),
                parent_depth=pl.col("depth"),
                root_id=pl.col("root_id"),
                parent_ancestors=pl.col("ancestors"),
            ),
            on="parent_id",
        ).select(
            "category_id",
            "parent_id",
            depth=pl.col("parent_depth") + 1,
            root_id=pl.col("root_id"),
            ancestors=pl.concat_list(pl.col("category_id"), pl.col("parent_ancestors")),
        )
        levels.append(frontier)
    return (
        pl.concat(levels)
        .select(list(CATEGORY_TREE_TABLE_SCHEMA))
        .cast(CATEGORY_TREE_TABLE_SCHEMA)
        .sort("category_id")
    )


# --- property history ----------------------------------------------------------------------------


def _parsed_value() -> pl.Expr:
    raw = pl.col("raw").str.strip_chars()
    category = raw.cast(pl.Int64, strict=False)
    return (
        pl.when(pl.col("property") == "categoryid")
        .then(pl.when(category >= 0).then(category.cast(pl.Float64)))
        .when(pl.col("property") == "available")
        .then(pl.when(raw == "1").then(1.0).when(raw == "0").then(0.0))
        # Price: one number with RetailRocket's 'n' prefix, e.g. 'n552.000'.
        .otherwise(raw.str.extract(r"^n(\d+(?:\.\d*)?)$", 1).cast(pl.Float64, strict=False))
    )


_EXPECTED = {
    "categoryid": "a non-negative integer category id",
    "available": "'0' or '1'",
    "price": "a number like 'n552.000'",
}


def property_history(properties: pl.DataFrame) -> pl.DataFrame:
    """Interpreted history of ``categoryid``, ``available`` and ``790`` (renamed ``price``).

    Input RAW_PROPERTIES_SCHEMA; output PROPERTY_HISTORY_SCHEMA sorted by (item_id, property,
    timestamp), keeping only the snapshots where a value changed: the weekly snapshots repeat
    the same value again and again, and lookups only need the change points. A malformed value
    raises :class:`RetailRocketFormatError` naming the property, item and timestamp.
    """
    df = properties.filter(pl.col("property").is_in(list(_INTERPRETED))).select(
        item_id=pl.col("itemid").cast(pl.Int64),
        timestamp=pl.col("timestamp").cast(pl.Int64),
        property=pl.col("property").replace_strict(_INTERPRETED, return_dtype=pl.String),
        raw=pl.col("value"),
    )
    df = df.with_columns(value=_parsed_value())
    bad = df.filter(pl.col("value").is_null())
    if bad.height:
        row = bad.row(0, named=True)
        raw_name = PROPERTY_PRICE if row["property"] == "price" else row["property"]
        raise RetailRocketFormatError(
            PROPERTIES_SOURCE,
            None,
            "value",
            f"property '{raw_name}' of item {row['item_id']} at {row['timestamp']}: "
            f"{row['raw']!r} is not {_EXPECTED[row['property']]}",
        )
    keys = ["item_id", "property"]
    df = df.drop("raw").sort([*keys, "timestamp", "value"])
    changed = (
        (pl.col("item_id") != pl.col("item_id").shift(1))
        | (pl.col("property") != pl.col("property").shift(1))
        | (pl.col("value") != pl.col("value").shift(1))
    ).fill_null(True)
    return df.filter(changed).select(list(PROPERTY_HISTORY_SCHEMA)).cast(PROPERTY_HISTORY_SCHEMA)


# --- lookups -------------------------------------------------------------------------------------


def item_catalog(
    history: pl.DataFrame,
    tree_table: pl.DataFrame,
    as_of_ms: int,
    item_ids: pl.Series | None = None,
) -> pl.DataFrame:
    """One row per item with its latest category, price and availability at or before
    ``as_of_ms`` (ITEM_CATALOG_SCHEMA, sorted by item_id).

    Without ``item_ids``: every item described at or before ``as_of_ms``. With ``item_ids``:
    exactly those items; an item never described by then gets nulls.
    """
    latest = (
        history.filter(pl.col("timestamp") <= as_of_ms)
        .sort(["item_id", "property", "timestamp", "value"])
        .group_by(["item_id", "property"])
        .agg(pl.col("value").last())
        .group_by("item_id")
        .agg(
            category_id=pl.col("value").filter(pl.col("property") == "categoryid").first(),
            price=pl.col("value").filter(pl.col("property") == "price").first(),
            available=pl.col("value").filter(pl.col("property") == "available").first(),
        )
    )
    if item_ids is None:
        items = latest.select("item_id")
    else:
        items = item_ids.cast(pl.Int64).drop_nulls().unique().to_frame("item_id")
    roots = tree_table.select("category_id", root_category_id=pl.col("root_id"))
    return (
        items.join(latest, on="item_id", how="left")
        .with_columns(pl.col("category_id").cast(pl.Int64))
        .join(roots, on="category_id", how="left")
        .with_columns(as_of=pl.lit(as_of_ms, pl.Int64))
        .select(list(ITEM_CATALOG_SCHEMA))
        .cast(ITEM_CATALOG_SCHEMA)
        .sort("item_id")
    )


def values_at(
    history: pl.DataFrame, prop: str, item_ids: pl.Series, timestamps: pl.Series
) -> pl.Series:
    """The value of ``prop`` in force at each (item, timestamp): the latest change at or before
    that instant, null when none. Aligned with the inputs; ``prop`` may be ``'790'`` or
    ``'price'``."""
    prop = _INTERPRETED.get(prop, prop)
    if prop not in PROPERTY_HISTORY_NAMES:
        raise ValueError(f"unknown property {prop!r}; expected one of {PROPERTY_HISTORY_NAMES}")
    if item_ids.len() != timestamps.len():
        raise ValueError(
            f"item_ids and timestamps differ in length ({item_ids.len()} vs {timestamps.len()})"
        )
    queries = pl.DataFrame(
        {"item_id": item_ids.cast(pl.Int64), "timestamp": timestamps.cast(pl.Int64)}
    ).with_row_index("__order")
    changes = (
        history.filter(pl.col("property") == prop)
        .select("item_id", "timestamp", "value")
        .sort(["timestamp", "value"])
    )
    found = queries.sort("timestamp").join_asof(
        changes, on="timestamp", by="item_id", strategy="backward", check_sortedness=False
    )
    return found.sort("__order")["value"].alias(prop)
