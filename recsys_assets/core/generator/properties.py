"""Synthetic item properties: weekly snapshots written as ``item_properties_part{1,2}.csv``.

Part of the synthetic generator (see :mod:`recsys_assets.core.generator`).

Scheme, chosen to land near the real file's ~48.6 rows per item:

* an item's **first snapshot** lists everything: ``categoryid``, ``available``, ``790`` (price,
  ``n<price>.000``) and its hashed properties (a few every item has, plus a Zipf-chosen handful);
* every **later snapshot** repeats ``available`` and ``790`` (they move: prices change now and
  then, availability flips), and ``categoryid`` appears again only for the few items that move
  category once. Static hashed properties are not repeated, as in the real data.

Rows are produced one snapshot at a time (a loop over ~19 weeks), each week's rows split at
random between the two files, so both files cover the whole period and memory stays bounded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recsys_assets.core.data.schemas import (
    PROPERTIES_FILES,
    PROPERTY_AVAILABLE,
    PROPERTY_CATEGORY,
    PROPERTY_PRICE,
)
from recsys_assets.core.generator.catalog import BlockSampler, CategoryForest, ItemCatalog
from recsys_assets.core.generator.sessions import DAY_MS, HOUR_MS, Period

# Hashed properties every item carries; the first one is category-like (items of a category
# share its value), so hashed features are not pure noise for content models.
CORE_PROPERTIES = ("364", "888", "283", "6", "776", "159")
N_PROPERTY_NAMES = 1104  # real data: property names "0" … "1103"
LATE_ITEM_SHARE = 0.12  # items whose first snapshot is after the first week
CATEGORY_MOVE_SHARE = 0.015
PRICE_CHANGE_RATE = 0.04  # per item and week
AVAILABILITY_FLIP_RATE = 0.05  # per item and week


def snapshot_times(period: Period) -> np.ndarray:
    """Weekly snapshots at 03:00 UTC, the first one week after the period starts."""
    first = period.start_ms + 7 * DAY_MS + 3 * HOUR_MS
    times = np.arange(first, period.end_ms, 7 * DAY_MS, dtype=np.int64)
    return times if len(times) else np.array([period.start_ms + 3 * HOUR_MS], dtype=np.int64)


def _value_vocabulary(rng: np.random.Generator, n: int) -> pl.Series:
    """``n`` hashed values of 1–4 tokens: hashed words (``639502``) or numbers (``n552.000``)."""
    n_tok = 1 + rng.binomial(3, 0.3, n)
    cols = {}
    for j in range(4):
        is_num = rng.random(n) < 0.35
        num = np.round(rng.lognormal(5.0, 1.5, n)).astype(np.int64)
        word = rng.integers(100_000, 1_000_000, n)
        cols[f"num{j}"], cols[f"word{j}"], cols[f"isnum{j}"] = num, word, is_num
    cols["n_tok"] = n_tok
    tokens = [
        pl.when(pl.col("n_tok") > j).then(
            pl.when(pl.col(f"isnum{j}"))
            .then(pl.format("n{}.000", pl.col(f"num{j}")))
            .otherwise(pl.col(f"word{j}").cast(pl.Utf8))
        )
        for j in range(4)
    ]
    return pl.DataFrame(cols).select(
        pl.concat_str(tokens, separator=" ", ignore_nulls=True).alias("value")
    )["value"]


def _hashed_rows(
    rng: np.random.Generator, items: ItemCatalog, n_extra: float
) -> tuple[np.ndarray, np.ndarray, pl.Series, pl.Series]:
    """(item index, property index, value) of every hashed-property row, by item; and the
    property names the index refers to."""
    names = [
        str(i) for i in range(N_PROPERTY_NAMES) if str(i) not in (PROPERTY_PRICE, *CORE_PROPERTIES)
    ]
    all_names = [*CORE_PROPERTIES, *names]
    n_items, n_core = items.n, len(CORE_PROPERTIES)
    extra = rng.poisson(max(n_extra, 0.0), n_items)
    pool_p = (np.arange(len(names)) + 1.0) ** -0.8
    extra_prop = n_core + np.searchsorted(
        np.cumsum(pool_p) / pool_p.sum(), rng.random(int(extra.sum())), side="right"
    ).clip(0, len(names) - 1)
    item = np.concatenate(
        [np.repeat(np.arange(n_items), n_core), np.repeat(np.arange(n_items), extra)]
    )
    prop = np.concatenate([np.tile(np.arange(n_core), n_items), extra_prop])
    key = np.unique(item.astype(np.int64) * len(all_names) + prop)  # drops repeats, sorts by item
    item, prop = key // len(all_names), key % len(all_names)

    n_vocab = int(np.clip(len(key) // 5, 1000, 400_000))
    vocab = _value_vocabulary(rng, n_vocab)
    # Values are shared between items (a Zipf head per property), as hashed values are.
    rank = np.searchsorted(
        np.cumsum((np.arange(n_vocab) + 1.0) ** -1.0) / np.sum((np.arange(n_vocab) + 1.0) ** -1.0),
        rng.random(len(key)),
        side="right",
    ).clip(0, n_vocab - 1)
    value_idx = (rank + prop * 7919) % n_vocab
    category_like = prop == 0
    value_idx[category_like] = (items.category[item[category_like]] * 104_729 + 17) % n_vocab
    return item, prop, vocab.gather(value_idx).rename("value"), pl.Series(all_names)


def write_item_properties(
    rng: np.random.Generator,
    forest: CategoryForest,
    items: ItemCatalog,
    period: Period,
    out_dir: Path,
    target_rows: int,
) -> dict[str, int]:
    """Write both property files; returns rows per file plus ``total`` and ``snapshots``."""
    snaps = snapshot_times(period)
    n, n_w = items.n, len(snaps)

    first = (
        np.where(rng.random(n) < LATE_ITEM_SHARE, rng.integers(1, n_w, n), 0)
        if n_w > 1
        else np.zeros(n, dtype=np.int64)
    )
    move_week = np.where(
        (rng.random(n) < CATEGORY_MOVE_SHARE) & (first < n_w - 1),
        rng.integers(np.minimum(first + 1, n_w - 1), n_w),
        -1,
    )
    leaf_sampler = BlockSampler.build(forest.root, np.where(forest.is_leaf, 1.0, 0.0), forest.n)
    moved_to = leaf_sampler.draw_other(items.root, rng.random(n), items.category)
    move_week[moved_to == items.category] = -1  # nowhere else to go in that tree

    # Price: a log-scale random walk with rare jumps; rounded to 12s as the real prices look.
    jumps = np.where(rng.random((n, n_w)) < PRICE_CHANGE_RATE, rng.normal(0.0, 0.15, (n, n_w)), 0.0)
    jumps[:, 0] = 0.0
    price = np.exp(items.log_price[:, None] + np.cumsum(jumps, axis=1))
    price = np.maximum(12, np.round(price / 12.0) * 12).astype(np.int64)
    del jumps
    flips = rng.random((n, n_w)) < AVAILABILITY_FLIP_RATE
    flips[:, 0] = False
    available = ((rng.random(n) < 0.8)[:, None] ^ (np.cumsum(flips, axis=1) % 2 == 1)).astype(
        np.int8
    )
    del flips

    fixed_rows = 3 * n + 2 * int((n_w - 1 - first).sum()) + int((move_week >= 0).sum())
    n_core = len(CORE_PROPERTIES)
    n_extra = (target_rows - fixed_rows) / n - n_core
    # A few Zipf draws repeat a property the item already has and are dropped; ask a bit more.
    h_item, h_prop, h_value, names = _hashed_rows(rng, items, n_extra * 1.03)
    h_first = first[h_item]

    cat_ids = forest.ids
    paths = [out_dir / name for name in PROPERTIES_FILES]
    rows = [0, 0]
    with open(paths[0], "wb") as f1, open(paths[1], "wb") as f2:
        for w in range(n_w):
            new = np.flatnonzero(first == w)
            seen = np.flatnonzero(first <= w)
            moved = np.flatnonzero(move_week == w)
            hashed = np.flatnonzero(h_first == w)
            parts = [
                pl.DataFrame(
                    {
                        "item": np.concatenate([new, moved]),
                        "property": PROPERTY_CATEGORY,
                        "value": pl.Series(
                            np.concatenate([cat_ids[items.category[new]], cat_ids[moved_to[moved]]])
                        ).cast(pl.Utf8),
                    }
                ),
                pl.DataFrame(
                    {
                        "item": seen,
                        "property": PROPERTY_AVAILABLE,
                        "value": pl.Series(available[seen, w]).cast(pl.Utf8),
                    }
                ),
                pl.DataFrame({"item": seen, "p": price[seen, w]}).select(
                    "item",
                    property=pl.lit(PROPERTY_PRICE),
                    value=pl.format("n{}.000", pl.col("p")),
                ),
                pl.DataFrame(
                    {
                        "item": h_item[hashed],
                        "property": names.gather(h_prop[hashed]),
                        "value": h_value.gather(hashed),
                    }
                ),
            ]
            week = pl.concat(parts, how="vertical_relaxed").sort("item", maintain_order=True)
            week = week.select(
                timestamp=pl.lit(int(snaps[w]), dtype=pl.Int64),
                itemid=pl.Series(items.ids[week["item"].to_numpy()]),
                property=pl.col("property"),
                value=pl.col("value"),
            )
            to_first = pl.Series(rng.random(week.height) < 0.5)
            for k, (f, part) in enumerate(
                ((f1, week.filter(to_first)), (f2, week.filter(~to_first)))
            ):
                part.write_csv(f, include_header=(w == 0), line_terminator="\n")
                rows[k] += part.height
    return {
        PROPERTIES_FILES[0]: rows[0],
        PROPERTIES_FILES[1]: rows[1],
        "total": sum(rows),
        "snapshots": n_w,
    }
