"""Category tree table, property history and as-of lookups on hand-made frames."""

from __future__ import annotations

import polars as pl
import pytest

from recsys_assets.core.data.catalog import (
    category_tree_table,
    item_catalog,
    property_history,
    values_at,
)
from recsys_assets.core.data.retailrocket import RetailRocketFormatError, read_item_properties
from recsys_assets.core.data.schemas import (
    CATEGORY_TREE_TABLE_SCHEMA,
    ITEM_CATALOG_SCHEMA,
    PROPERTY_HISTORY_SCHEMA,
    RAW_CATEGORY_TREE_SCHEMA,
    RAW_PROPERTIES_SCHEMA,
)

WEEK = 604_800_000
W0 = 1_431_226_800_000  # first snapshot
W1, W2, W3 = W0 + WEEK, W0 + 2 * WEEK, W0 + 3 * WEEK


def tree(rows: list[tuple[int, int | None]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=RAW_CATEGORY_TREE_SCHEMA, orient="row")


def props(rows: list[tuple[int, int, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=RAW_PROPERTIES_SCHEMA, orient="row")


# --- category tree -------------------------------------------------------------------------------


def test_tree_depth_root_and_ancestors():
    table = category_tree_table(
        tree([(1016, 213), (809, 169), (5, 1016), (213, None), (169, None), (570, 9), (9, None)])
    )
    assert table.schema == pl.Schema(CATEGORY_TREE_TABLE_SCHEMA)
    got = {
        r["category_id"]: (r["parent_id"], r["depth"], r["root_id"], r["ancestors"])
        for r in table.iter_rows(named=True)
    }
    assert got == {
        5: (1016, 2, 213, [5, 1016, 213]),
        9: (None, 0, 9, [9]),
        169: (None, 0, 169, [169]),
        213: (None, 0, 213, [213]),
        570: (9, 1, 9, [570, 9]),
        809: (169, 1, 169, [809, 169]),
        1016: (213, 1, 213, [1016, 213]),
    }
    assert table["category_id"].to_list() == sorted(got)


def test_tree_unlisted_parent_becomes_a_root():
    table = category_tree_table(tree([(7, 99), (8, 7)]))
    got = {
        r["category_id"]: (r["depth"], r["root_id"], r["ancestors"])
        for r in table.iter_rows(named=True)
    }
    assert got == {99: (0, 99, [99]), 7: (1, 99, [7, 99]), 8: (2, 99, [8, 7, 99])}


def test_tree_cycle_is_detected():
    with pytest.raises(
        RetailRocketFormatError, match=r"category 2 is in a parent cycle: 2 -> 3 -> 2"
    ):
        category_tree_table(tree([(1, None), (2, 3), (3, 2), (4, 3)]))


# --- property history ----------------------------------------------------------------------------


RAW = [
    (W0, 1, "790", "n552.000"),
    (W1, 1, "790", "n552.000"),  # unchanged: collapsed
    (W2, 1, "790", "n600.500"),
    (W3, 1, "790", "n552.000"),  # back to the old price: a change, kept
    (W0, 1, "categoryid", "1016"),
    (W2, 1, "categoryid", "809"),
    (W0, 1, "available", "1"),
    (W1, 1, "available", "0"),
    (W0, 1, "888", "1116713 960601 n277.200"),  # uninterpreted: dropped
    (W1, 2, "790", "n10.000"),
    (W1, 2, "categoryid", "570"),
]


def test_property_history_parses_renames_and_collapses():
    hist = property_history(props(RAW))
    assert hist.schema == pl.Schema(PROPERTY_HISTORY_SCHEMA)
    assert hist.rows() == [
        (1, W0, "available", 1.0),
        (1, W1, "available", 0.0),
        (1, W0, "categoryid", 1016.0),
        (1, W2, "categoryid", 809.0),
        (1, W0, "price", 552.0),
        (1, W2, "price", 600.5),
        (1, W3, "price", 552.0),
        (2, W1, "categoryid", 570.0),
        (2, W1, "price", 10.0),
    ]


@pytest.mark.parametrize(
    "prop, value, expected",
    [
        ("790", "552.000", "is not a number like 'n552.000'"),
        ("790", "n552.000 n1.000", "is not a number like 'n552.000'"),
        ("available", "yes", "is not '0' or '1'"),
        ("categoryid", "c12", "is not a non-negative integer category id"),
    ],
)
def test_property_history_malformed_value_names_the_property(prop, value, expected):
    with pytest.raises(RetailRocketFormatError) as info:
        property_history(props([*RAW, (W2, 3, prop, value)]))
    err = info.value
    assert err.column == "value"
    assert f"property '{prop}' of item 3 at {W2}: {value!r} {expected}" in str(err)


def test_property_history_from_files(tmp_path):
    path = tmp_path / "item_properties_part1.csv"
    path.write_text(
        f"timestamp,itemid,property,value\n{W0},4,790,n12.000\n{W0},4,888,x\n{W1},4,790,n12.000\n"
    )
    raw, _ = read_item_properties([path], properties={"790", "categoryid", "available"})
    assert property_history(raw).rows() == [(4, W0, "price", 12.0)]


# --- lookups -------------------------------------------------------------------------------------


def test_item_catalog_as_of_does_not_peek():
    hist = property_history(props(RAW))
    table = category_tree_table(tree([(1016, 213), (809, 169), (213, None), (169, None)]))
    # Between W1 and W2: item 1 still costs 552 in category 1016 (price change at W2 unseen).
    cat = item_catalog(hist, table, as_of_ms=W2 - 1)
    assert cat.schema == pl.Schema(ITEM_CATALOG_SCHEMA)
    assert cat.rows() == [
        (1, 1016, 213, 552.0, 0, W2 - 1),
        (2, 570, None, 10.0, None, W2 - 1),  # 570 is not in this tree: no root
    ]
    # At exactly W2 the new snapshot is in force.
    assert item_catalog(hist, table, as_of_ms=W2).row(0) == (1, 809, 169, 600.5, 0, W2)
    assert item_catalog(hist, table, as_of_ms=W3)["price"].to_list() == [552.0, 10.0]


def test_item_catalog_items_not_described_yet():
    hist = property_history(props(RAW))
    table = category_tree_table(tree([(1016, None)]))
    # Item 2 is first described at W1: absent before, unless asked for; item 9 is never described.
    assert item_catalog(hist, table, as_of_ms=W0)["item_id"].to_list() == [1]
    cat = item_catalog(hist, table, as_of_ms=W0, item_ids=pl.Series([9, 2, 1, 2]))
    assert cat.rows() == [
        (1, 1016, 1016, 552.0, 1, W0),
        (2, None, None, None, None, W0),
        (9, None, None, None, None, W0),
    ]


def test_values_at_price_in_force():
    hist = property_history(props(RAW))
    items = pl.Series([1, 1, 1, 1, 2, 2, 7])
    times = pl.Series([W3 + 5, W0 - 1, W2, W2 - 1, W1, W0, W2])
    assert values_at(hist, "790", items, times).to_list() == [
        552.0,
        None,
        600.5,
        552.0,
        10.0,
        None,
        None,
    ]
    assert values_at(hist, "available", pl.Series([1]), pl.Series([W1 + 1])).to_list() == [0.0]


def test_values_at_rejects_unknown_property_and_length_mismatch():
    hist = property_history(props(RAW))
    with pytest.raises(ValueError, match="unknown property"):
        values_at(hist, "888", pl.Series([1]), pl.Series([W0]))
    with pytest.raises(ValueError, match="differ in length"):
        values_at(hist, "price", pl.Series([1, 2]), pl.Series([W0]))
