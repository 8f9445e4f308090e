"""Conversion funnel on a hand-made click-stream with hand-computed counts and rates."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from recsys_assets.core.analytics.funnel import FUNNEL_SCHEMA, conversion_funnel
from recsys_assets.core.data.schemas import INTERACTIONS_SCHEMA, ITEM_CATALOG_SCHEMA

D1 = int(datetime(2015, 5, 4, tzinfo=UTC).timestamp() * 1000)  # 2015-05-04 00:00 UTC
D2 = D1 + 86_400_000


def _interactions(rows: list[tuple[int, int, str, int, int | None]]) -> pl.DataFrame:
    user, item, event, ts, tid = zip(*rows, strict=True)
    n = len(rows)
    return pl.DataFrame(
        {
            "user_id": user,
            "item_id": item,
            "event": event,
            "timestamp": ts,
            "transaction_id": tid,
            "weight": [1.0] * n,
            "session_id": [0] * n,
        },
        schema=INTERACTIONS_SCHEMA,
    )


@pytest.fixture
def clicks() -> pl.DataFrame:
    return _interactions(
        [
            (1, 1, "view", D1 + 10, None),
            (1, 1, "view", D1 + 20, None),
            (1, 1, "addtocart", D1 + 30, None),
            (1, 1, "transaction", D1 + 40, 100),
            (1, 2, "view", D2 - 1, None),  # last millisecond of day 1
            (2, 1, "view", D1 + 50, None),
            (2, 1, "addtocart", D2, None),  # first millisecond of day 2
            (2, 3, "transaction", D2 + 10, 101),  # a purchase with no view or cart
            (3, 2, "view", D2 + 20, None),
            (3, 2, "addtocart", D2 + 30, None),
        ]
    )


@pytest.fixture
def catalog() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_id": [1, 2, 3],
            "category_id": [7, 8, None],  # item 3: category unknown
            "root_category_id": [1, 1, None],
            "price": [1.0, 2.0, 3.0],
            "available": [1, 1, 1],
            "as_of": [D2, D2, D2],
        },
        schema=ITEM_CATALOG_SCHEMA,
    )


def _row(funnel: pl.DataFrame, scope: str, key: str) -> dict:
    rows = funnel.filter((pl.col("scope") == scope) & (pl.col("key") == key)).to_dicts()
    assert len(rows) == 1, (scope, key, funnel)
    return rows[0]


def test_overall_counts_and_pair_rates(clicks, catalog):
    # events: views 5, carts 3, purchases 2; users: viewers {1,2,3}, carters {1,2,3}, buyers {1,2}.
    # (user,item) pairs: (1,1) v c t | (1,2) v | (2,1) v c | (2,3) t | (3,2) v c
    # viewed 4, viewed & carted 3 -> 3/4; carted 3, carted & bought 1 -> 1/3;
    # viewed & bought 1 -> 1/4 (the unviewed purchase (2,3) is not a view conversion).
    row = _row(conversion_funnel(clicks, catalog), "overall", "")
    assert row == {
        "scope": "overall",
        "key": "",
        "views": 5,
        "addtocarts": 3,
        "transactions": 2,
        "viewers": 3,
        "carters": 3,
        "buyers": 2,
        "view_to_cart": pytest.approx(0.75),
        "cart_to_purchase": pytest.approx(1 / 3),
        "view_to_purchase": pytest.approx(0.25),
    }


def test_daily_rows_split_on_utc_midnight(clicks, catalog):
    funnel = conversion_funnel(clicks, catalog)
    assert funnel.filter(pl.col("scope") == "day")["key"].to_list() == [
        "2015-05-04",
        "2015-05-05",
    ]
    # day 1: views (1,1)x2 (1,2) (2,1) = 4, cart 1, purchase 1; pairs (1,1) vct, (1,2) v, (2,1) v
    day1 = _row(funnel, "day", "2015-05-04")
    assert [day1[c] for c in list(FUNNEL_SCHEMA)[2:8]] == [4, 1, 1, 2, 1, 1]
    assert day1["view_to_cart"] == pytest.approx(1 / 3)
    assert day1["cart_to_purchase"] == pytest.approx(1.0)
    assert day1["view_to_purchase"] == pytest.approx(1 / 3)
    # day 2: (2,1) c, (2,3) t, (3,2) v c -> viewed 1 & carted 1; carted 2, none bought
    day2 = _row(funnel, "day", "2015-05-05")
    assert [day2[c] for c in list(FUNNEL_SCHEMA)[2:8]] == [1, 2, 1, 1, 2, 1]
    assert day2["view_to_cart"] == pytest.approx(1.0)
    assert day2["cart_to_purchase"] == pytest.approx(0.0)
    assert day2["view_to_purchase"] == pytest.approx(0.0)


def test_category_rows_top_by_views(clicks, catalog):
    funnel = conversion_funnel(clicks, catalog)
    categories = funnel.filter(pl.col("scope") == "category")
    assert categories["key"].to_list() == ["7", "8"]  # 3 views before 2; item 3 has no category
    # category 7 = item 1: pairs (1,1) vct, (2,1) vc
    cat7 = _row(funnel, "category", "7")
    assert [cat7[c] for c in list(FUNNEL_SCHEMA)[2:8]] == [3, 2, 1, 2, 2, 1]
    assert (cat7["view_to_cart"], cat7["cart_to_purchase"], cat7["view_to_purchase"]) == (
        pytest.approx(1.0),
        pytest.approx(0.5),
        pytest.approx(0.5),
    )
    cat8 = _row(funnel, "category", "8")
    assert cat8["transactions"] == 0 and cat8["cart_to_purchase"] == 0.0

    top1 = conversion_funnel(clicks, catalog, top_categories=1)
    assert top1.filter(pl.col("scope") == "category")["key"].to_list() == ["7"]


def test_zero_denominator_gives_null_and_schema(catalog):
    only_views = _interactions([(1, 1, "view", D1, None)])
    funnel = conversion_funnel(only_views, catalog)
    assert funnel.schema == pl.Schema(FUNNEL_SCHEMA)
    row = _row(funnel, "overall", "")
    assert row["view_to_cart"] == 0.0 and row["cart_to_purchase"] is None

    empty = conversion_funnel(only_views.clear(), catalog)
    assert empty.height == 1 and empty["views"][0] == 0 and empty["view_to_cart"][0] is None


def test_category_column_can_be_the_root(clicks, catalog):
    funnel = conversion_funnel(clicks, catalog, category_column="root_category_id")
    root = _row(funnel, "category", "1")
    assert root["views"] == 5 and root["transactions"] == 1  # item 3's purchase has no root


def test_bad_input_is_named(clicks, catalog):
    bad = clicks.with_columns(
        event=pl.when(pl.int_range(pl.len()) == 2).then(pl.lit("click")).otherwise("event")
    )
    with pytest.raises(ValueError, match=r"interactions: unknown 'event' value 'click' at row 2"):
        conversion_funnel(bad, catalog)
    with pytest.raises(ValueError, match=r"interactions: missing column\(s\) \['event'\]"):
        conversion_funnel(clicks.drop("event"), catalog)
    with pytest.raises(ValueError, match=r"catalog: duplicate 'item_id' 1 at row 3"):
        conversion_funnel(clicks, pl.concat([catalog, catalog.head(1)]))
