"""build_training_data / relevant_items on a hand-made frame with hand-computed answers."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recsys_assets.core.data.schemas import (
    CATEGORY_TREE_TABLE_SCHEMA,
    ITEM_CATALOG_SCHEMA,
    SPLITS_SCHEMA,
)
from recsys_assets.core.data.training_data import (
    build_training_data,
    price_buckets,
    relevant_items,
    sample_users,
    training_data_from_bytes,
    training_data_to_bytes,
)

DAY = 86_400_000


def _splits() -> pl.DataFrame:
    rows = [
        # user, item, event, timestamp, tx, weight, session, split
        (10, 100, "view", 1 * DAY, None, 1.0, 0, "train"),
        (10, 100, "addtocart", 1 * DAY + 60_000, None, 3.0, 0, "train"),
        (10, 200, "view", 1 * DAY + 120_000, None, 1.0, 0, "train"),
        (10, 300, "view", 3 * DAY, None, 1.0, 1, "train"),
        (20, 200, "view", 2 * DAY, None, 1.0, 2, "train"),
        (20, 999, "transaction", 2 * DAY + 1, 7, 5.0, 2, "train"),  # 999 not in catalogue
        (30, 100, "view", 5 * DAY, None, 1.0, 3, "train"),
        (10, 400, "view", 9 * DAY, None, 1.0, 4, "test"),
        (10, 100, "view", 9 * DAY + 1, None, 1.0, 4, "test"),
        (40, 100, "view", 9 * DAY, None, 1.0, 5, "test"),  # no training history
        (20, 300, "view", 8 * DAY, None, 1.0, 6, "valid"),
    ]
    cols = [
        "user_id",
        "item_id",
        "event",
        "timestamp",
        "transaction_id",
        "weight",
        "session_id",
        "split",
    ]
    return pl.DataFrame(
        rows, schema=dict(zip(cols, SPLITS_SCHEMA.values(), strict=True)), orient="row"
    )


def _tree() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "category_id": [1, 2, 3, 4],
            "parent_id": [None, 1, 1, None],
            "depth": [0, 1, 1, 0],
            "root_id": [1, 1, 1, 4],
            "ancestors": [[1], [2, 1], [3, 1], [4]],
        },
        schema=CATEGORY_TREE_TABLE_SCHEMA,
    )


def _catalog() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_id": [100, 200, 300, 400, 500],
            "category_id": [2, 3, 4, None, 2],
            "root_category_id": [1, 1, 4, None, 1],
            "price": [10.0, None, 30.0, 40.0, 50.0],
            "available": [1, 0, None, 1, 1],
            "as_of": [0] * 5,
        },
        schema=ITEM_CATALOG_SCHEMA,
    )


@pytest.fixture(scope="module")
def data():
    return build_training_data(_splits(), _catalog(), _tree())


def test_ids_and_matrix(data):
    assert data.user_ids.tolist() == [10, 20, 30]
    # interactions ∪ catalogue, sorted
    assert data.item_ids.tolist() == [100, 200, 300, 400, 500, 999]
    expected = np.array(
        [
            [4.0, 1.0, 1.0, 0, 0, 0],  # user 10: view+addtocart on 100
            [0, 1.0, 0, 0, 0, 5.0],
            [1.0, 0, 0, 0, 0, 0],
        ],
        dtype=np.float32,
    )
    assert data.user_item.dtype == np.float32
    np.testing.assert_array_equal(data.user_item.toarray(), expected)
    assert data.reference_ms == 5 * DAY
    assert data.user_index(np.array([20, 11, 10])).tolist() == [1, -1, 0]
    assert data.item_index(np.array([999, 1, 100])).tolist() == [5, -1, 0]


def test_item_features(data):
    assert data.category_ids.tolist() == [1, 2, 3, 4]
    assert data.item_category.tolist() == [1, 2, 3, -1, 1, -1]
    expected = np.array(
        [[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(data.item_ancestors.toarray(), expected)
    np.testing.assert_array_equal(data.item_price, [10, np.nan, 30, 40, 50, np.nan])
    # 4 known prices 10,30,40,50: interpolated quintile edges at 22, 32, 38, 44
    assert data.item_price_bucket.tolist() == [0, -1, 1, 3, 4, -1]
    assert data.item_available.tolist() == [1, 0, -1, 1, 1, -1]


def test_price_buckets_equal_counts():
    assert price_buckets(np.arange(10, dtype=np.float32)).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_sessions_and_events(data):
    assert data.session_indptr.tolist() == [0, 3, 4, 6, 7]
    assert data.session_items.tolist() == [0, 0, 1, 2, 1, 5, 0]
    assert data.session_users.tolist() == [0, 0, 1, 2]
    assert np.all(np.diff(data.event_time) >= 0)
    assert data.event_user.tolist() == [0, 0, 0, 1, 1, 0, 2]
    assert data.event_item.tolist() == [0, 0, 1, 1, 5, 2, 0]
    assert data.event_weight.tolist() == [1, 3, 1, 1, 5, 1, 1]


def test_user_features(data):
    f = data.user_features
    assert f["user_id"].to_list() == [10, 20, 30]
    assert f["n_events"].to_list() == [4, 2, 1]
    assert f["n_items"].to_list() == [3, 2, 1]
    assert f["n_sessions"].to_list() == [2, 1, 1]
    assert f["days_active"].to_list() == [2, 1, 1]
    assert f["n_transactions"].to_list() == [0, 1, 0]
    # root 1 holds items 100 and 200 (5 of 7 events), root 4 holds item 300
    assert f["root_share_1"].to_list() == pytest.approx([0.75, 0.5, 1.0])
    assert f["root_share_4"].to_list() == pytest.approx([0.25, 0.0, 0.0])


def test_half_life_decays_matrix_not_raw_events():
    data = build_training_data(_splits(), _catalog(), _tree(), half_life_days=2.0)
    m = data.user_item.toarray()
    # user 30's view is at the reference time, user 10's item 300 view 2 days (one half-life) back
    assert m[2, 0] == pytest.approx(1.0)
    assert m[0, 2] == pytest.approx(0.5)
    assert data.event_weight.tolist() == [1, 3, 1, 1, 5, 1, 1]


def test_use_splits_train_and_valid():
    data = build_training_data(_splits(), _catalog(), _tree(), use_splits=("train", "valid"))
    assert data.user_item[1, 2] == 1.0
    assert data.reference_ms == 8 * DAY


def test_relevant_items(data):
    rel = relevant_items(_splits(), "test", data)
    # user 40 has no training history; duplicates collapse
    assert rel.rows() == [(10, 100), (10, 400)]


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="splits: missing column.*weight"):
        build_training_data(_splits().drop("weight"), _catalog(), _tree())
    bad = _splits().with_columns(
        pl.when(pl.int_range(pl.len()) == 2)
        .then(None)
        .otherwise(pl.col("item_id"))
        .alias("item_id")
    )
    with pytest.raises(ValueError, match="row 2.*item_id is null"):
        build_training_data(bad, _catalog(), _tree())
    with pytest.raises(ValueError, match="row 1.*weight"):
        build_training_data(
            _splits().with_columns(pl.Series("weight", [1.0, -3] + [1.0] * 9, pl.Float32)),
            _catalog(),
            _tree(),
        )
    with pytest.raises(ValueError, match="unknown split"):
        build_training_data(_splits(), _catalog(), _tree(), use_splits=("training",))
    with pytest.raises(ValueError, match="catalog: row 1: column item_id 100"):
        build_training_data(_splits(), pl.concat([_catalog().head(1), _catalog()]), _tree())
    with pytest.raises(ValueError, match="no interactions"):
        build_training_data(_splits().filter(pl.col("split") != "train"), _catalog(), _tree())


def test_bytes_round_trip_keeps_every_field(data):
    """The shared training_data asset stores this archive; models must see the same data."""
    import dataclasses

    payload = training_data_to_bytes(data, {"sample": "all"}, {"users": np.arange(3)})
    back, meta, extra = training_data_from_bytes(payload)
    assert meta["sample"] == "all"
    np.testing.assert_array_equal(extra["users"], np.arange(3))
    for field in dataclasses.fields(data):
        a, b = getattr(data, field.name), getattr(back, field.name)
        if isinstance(a, pl.DataFrame):
            assert a.equals(b), field.name
            assert a.schema == b.schema
        elif hasattr(a, "toarray"):
            assert (a != b).nnz == 0 and a.dtype == b.dtype, field.name
        elif isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=field.name)
            assert a.dtype == b.dtype, field.name
        else:
            assert a == b, field.name
    with pytest.raises(ValueError, match="not a recsys model archive"):
        training_data_from_bytes(b"junk")


def test_sample_users_is_seeded_and_keeps_small_sets_whole():
    splits = _splits()
    assert sample_users(splits, ("train",), 0.5, min_users=10).to_list() == [10, 20, 30]
    one = sample_users(splits, ("train",), 0.34, min_users=1, seed=3)
    assert (
        one.len() == 1 and one.to_list() == sample_users(splits, ("train",), 0.34, 1, 3).to_list()
    )
    with pytest.raises(ValueError, match="fraction"):
        sample_users(splits, ("train",), 0.0, min_users=1)


def test_sample_users_keeps_every_scored_user():
    """The users tuning scores (valid targets) are all in the sample; the rest are drawn."""
    users = np.arange(1000, dtype=np.int64)
    splits = pl.DataFrame({"user_id": users, "split": ["train"] * 1000})
    scored = pl.Series(np.arange(0, 1000, 10, dtype=np.int64))  # 100 users
    got = sample_users(splits, ("train",), 0.25, min_users=1, seed=0, always=scored)
    assert got.len() == 250 and got.is_sorted()
    assert set(scored.to_list()) <= set(got.to_list())
    # more scored users than the sample size: all of them still
    many = pl.Series(np.arange(0, 1000, 2, dtype=np.int64))
    assert sample_users(splits, ("train",), 0.25, 1, 0, always=many).len() == 500
    # a cap on the size, never below the scored users
    capped = sample_users(splits, ("train",), 0.25, 1, 0, always=scored, max_users=150)
    assert capped.len() == 150 and set(scored.to_list()) <= set(capped.to_list())
    assert sample_users(splits, ("train",), 0.25, 1, 0, always=scored, max_users=50).len() == 100
    assert sample_users(splits, ("train",), 0.5, 300, 0, max_users=200).len() == 200


def test_tuning_keeps_the_defaults_unless_the_gain_is_beyond_noise():
    from recsys_assets.defs.models.assets import MIN_IMPROVEMENT_Z, improvement_z

    rng = np.random.default_rng(0)
    users = np.arange(2000)
    base = rng.random(2000)
    default = pl.DataFrame({"user_id": users, "ndcg_at_10": base})
    noise = pl.DataFrame({"user_id": users, "ndcg_at_10": base + rng.normal(0, 0.3, 2000) * 0.01})
    real = pl.DataFrame({"user_id": users, "ndcg_at_10": base + 0.05 + rng.normal(0, 0.1, 2000)})
    assert abs(improvement_z(default, noise)) < MIN_IMPROVEMENT_Z
    assert improvement_z(default, real) > MIN_IMPROVEMENT_Z
    assert improvement_z(default, default) == 0.0 and improvement_z(None, real) == 0.0
