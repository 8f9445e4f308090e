"""Column contracts shared by the data layer, the assets and outside checks.

The RetailRocket names (``visitorid``, ``itemid`` …) are used only for the raw files; every
cleaned table uses ``user_id`` / ``item_id`` so that downstream code reads the same way whatever
the source was.
"""

from __future__ import annotations

import polars as pl

# --- raw RetailRocket files (DESIGN.md §3) -----------------------------------------------------
EVENTS_FILE = "events.csv"
PROPERTIES_FILES = ("item_properties_part1.csv", "item_properties_part2.csv")
CATEGORY_TREE_FILE = "category_tree.csv"

EVENTS_COLUMNS = ("timestamp", "visitorid", "event", "itemid", "transactionid")
PROPERTIES_COLUMNS = ("timestamp", "itemid", "property", "value")
CATEGORY_TREE_COLUMNS = ("categoryid", "parentid")

EVENT_TYPES = ("view", "addtocart", "transaction")

RAW_EVENTS_SCHEMA = {
    "timestamp": pl.Int64,  # Unix milliseconds, UTC
    "visitorid": pl.Int64,
    "event": pl.Utf8,
    "itemid": pl.Int64,
    "transactionid": pl.Int64,  # null except on transactions
}
RAW_PROPERTIES_SCHEMA = {
    "timestamp": pl.Int64,
    "itemid": pl.Int64,
    "property": pl.Utf8,
    "value": pl.Utf8,
}
RAW_CATEGORY_TREE_SCHEMA = {"categoryid": pl.Int64, "parentid": pl.Int64}

# Properties the platform interprets; every other property is an opaque hashed feature.
PROPERTY_CATEGORY = "categoryid"
PROPERTY_AVAILABLE = "available"
PROPERTY_PRICE = "790"

# --- cleaned tables ------------------------------------------------------------------------------
INTERACTIONS_SCHEMA = {
    "user_id": pl.Int64,
    "item_id": pl.Int64,
    "event": pl.Utf8,
    "timestamp": pl.Int64,  # Unix milliseconds, UTC (kept as in the raw file)
    "transaction_id": pl.Int64,
    "weight": pl.Float32,
    "session_id": pl.Int64,  # global, dense, ordered by (user, time)
}
SPLITS_SCHEMA = {**INTERACTIONS_SCHEMA, "split": pl.Utf8}  # split in SPLIT_NAMES
SPLIT_NAMES = ("train", "valid", "test")

CATEGORY_TREE_TABLE_SCHEMA = {
    "category_id": pl.Int64,
    "parent_id": pl.Int64,  # null for roots
    "depth": pl.Int32,  # 0 for roots
    "root_id": pl.Int64,
    "ancestors": pl.List(pl.Int64),  # from the category itself up to its root, inclusive
}
ITEM_CATALOG_SCHEMA = {
    "item_id": pl.Int64,
    "category_id": pl.Int64,  # null when never known before ``as_of``
    "root_category_id": pl.Int64,
    "price": pl.Float64,  # property 790, null when unknown
    "available": pl.Int8,  # 1/0, null when unknown
    "as_of": pl.Int64,  # Unix ms: values are the latest snapshot at or before this instant
}

DEFAULT_EVENT_WEIGHTS = {"view": 1.0, "addtocart": 3.0, "transaction": 5.0}
DEFAULT_SESSION_GAP_MINUTES = 30

# Interpreted item properties over time, long format: one row per (item, snapshot, property).
# ``property`` is one of PROPERTY_HISTORY_NAMES; ``value`` is the category id, the price, or 1/0.
PROPERTY_HISTORY_SCHEMA = {
    "item_id": pl.Int64,
    "timestamp": pl.Int64,
    "property": pl.Utf8,
    "value": pl.Float64,
}
PROPERTY_HISTORY_NAMES = ("categoryid", "price", "available")
