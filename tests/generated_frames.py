"""Splits, catalogue and category tree from a generated raw directory, without Dagster.

The same chain of pure functions as the ingestion assets (read → clean → temporal split,
property history → catalogue as of the test start), for tests of the torch models.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys_assets.core.data import catalog as catalog_core
from recsys_assets.core.data import retailrocket
from recsys_assets.core.data.interactions import clean_interactions
from recsys_assets.core.data.splits import temporal_split


def load_generated(raw_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(splits, catalog, tree_table) of the RetailRocket-style files in ``raw_dir``."""
    events, _ = retailrocket.read_events(raw_dir / "events.csv")
    interactions, _ = clean_interactions(events)
    splits, _ = temporal_split(interactions)
    props, _ = retailrocket.read_item_properties(
        [raw_dir / "item_properties_part1.csv", raw_dir / "item_properties_part2.csv"]
    )
    history = catalog_core.property_history(props)
    tree, _ = retailrocket.read_category_tree(raw_dir / "category_tree.csv")
    tree_table = catalog_core.category_tree_table(tree)
    as_of = int(splits.filter(pl.col("split") == "test")["timestamp"].min())
    item_ids = pl.concat([splits["item_id"].unique(), history["item_id"].unique()]).unique()
    catalog = catalog_core.item_catalog(history, tree_table, as_of, item_ids)
    return splits, catalog, tree_table


def next_item_protocol(splits: pl.DataFrame, trained_item_ids) -> pl.DataFrame:
    """Test rows restricted to ``trained_item_ids`` before sessions are replayed (the
    original GRU4Rec evaluation drops items the model was not trained on)."""
    return splits.filter(
        (pl.col("split") == "test") & pl.col("item_id").is_in(pl.Series(trained_item_ids))
    )
