"""Global temporal split: fractions, cutoffs, ties, no time overlap, report numbers."""

from __future__ import annotations

import polars as pl
import pytest

from recsys_assets.core.data.schemas import INTERACTIONS_SCHEMA, SPLITS_SCHEMA
from recsys_assets.core.data.splits import split_cutoffs, temporal_split

T0 = 1_433_000_000_000


def interactions(users: list[int], items: list[int], offsets: list[int]) -> pl.DataFrame:
    n = len(users)
    return pl.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "event": ["view"] * n,
            "timestamp": [T0 + o for o in offsets],
            "transaction_id": [None] * n,
            "weight": [1.0] * n,
            "session_id": list(range(n)),
        },
        schema=INTERACTIONS_SCHEMA,
    )


def test_fractions_cutoffs_and_report():
    # 10 events at offsets 0..9 (shuffled rows); 70/10/20 -> 7 train, 1 valid, 2 test.
    offsets = [3, 0, 9, 5, 1, 8, 2, 7, 4, 6]
    users = [1, 1, 2, 2, 3, 3, 1, 4, 4, 5]
    items = [10, 11, 10, 12, 13, 10, 14, 15, 11, 16]
    out, report = temporal_split(interactions(users, items, offsets))
    assert out.schema == pl.Schema(SPLITS_SCHEMA)
    assert out["timestamp"].to_list() == [T0 + o for o in offsets]  # input row order kept
    assert report.cutoffs_ms == (T0 + 6, T0 + 7)
    assert report.counts == {"train": 7, "valid": 1, "test": 2}
    by_split = dict(zip(out["timestamp"] - T0, out["split"], strict=True))
    assert [by_split[o] for o in range(10)] == ["train"] * 7 + ["valid"] + ["test"] * 2
    # offset->user: 0:1 1:3 2:1 3:1 4:4 5:2 6:5 | 7:4 | 8:3 9:2
    assert report.users == {"train": 5, "valid": 1, "test": 2}
    assert report.users_train_and_test == 2  # users 3 and 2
    # offset->item: 0:11 1:13 2:14 3:10 4:11 5:12 6:16 | 7:15 | 8:10 9:10
    assert report.items == {"train": 6, "valid": 1, "test": 1}


def test_no_time_overlap_between_splits():
    offsets = [i * 37 % 1000 for i in range(1000)]
    out, _ = temporal_split(interactions([i % 50 for i in range(1000)], [0] * 1000, offsets))
    span = out.group_by("split").agg(lo=pl.col("timestamp").min(), hi=pl.col("timestamp").max())
    span = {r["split"]: r for r in span.iter_rows(named=True)}
    assert span["train"]["hi"] < span["valid"]["lo"]
    assert span["valid"]["hi"] < span["test"]["lo"]
    assert out["split"].value_counts().sort("split").rows() == [
        ("test", 200),
        ("train", 700),
        ("valid", 100),
    ]


def test_ties_at_a_cutoff_go_to_the_earlier_split():
    # sorted offsets: 0 1 2 3 4 5 7 7 7 10 ; the 7th is 7 -> train takes all three 7s.
    offsets = [7, 0, 1, 7, 2, 3, 4, 5, 7, 10]
    out, report = temporal_split(interactions(list(range(10)), [1] * 10, offsets))
    assert report.cutoffs_ms == (T0 + 7, T0 + 7)
    assert report.counts == {"train": 9, "valid": 0, "test": 1}
    assert out.filter(pl.col("timestamp") == T0 + 7)["split"].unique().to_list() == ["train"]


def test_custom_fractions():
    out, report = temporal_split(
        interactions([1] * 20, [1] * 20, list(range(20))), (0.5, 0.25, 0.25)
    )
    assert report.counts == {"train": 10, "valid": 5, "test": 5}
    assert report.cutoffs_ms == (T0 + 9, T0 + 14)


@pytest.mark.parametrize(
    "fractions", [(0.7, 0.2, 0.2), (0.7, 0.3), (1.0, 0.0, 0.0), (0.8, -0.1, 0.3)]
)
def test_bad_fractions(fractions):
    with pytest.raises(ValueError, match="fractions"):
        split_cutoffs(pl.Series([1, 2, 3]), fractions)


def test_empty_input_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        temporal_split(interactions([], [], []))
