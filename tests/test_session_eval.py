"""Next-item session protocol on hand-made sessions."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from recsys_assets.core.evaluation.next_item import next_item_events, session_metrics


def session_table() -> pl.DataFrame:
    rows = [
        # session 1: 5,5,7,5,9 -> collapsed 5,7,5 (the second 5 is not consecutive), 9
        (1, 5, 1, "test"),
        (1, 5, 2, "test"),
        (1, 7, 3, "test"),
        (1, 5, 4, "test"),
        (1, 9, 5, "test"),
        (2, 3, 1, "test"),
        (2, 3, 2, "test"),  # 3,3 collapses to length 1: dropped
        (3, 4, 1, "test"),  # length 1: dropped
        (4, 2, 20, "test"),
        (4, 1, 10, "test"),  # out of time order in the input: 1 then 2
        (5, 8, 1, "train"),
        (5, 6, 2, "train"),  # another split: ignored
    ]
    return pl.DataFrame(rows, schema=["session_id", "item_id", "timestamp", "split"], orient="row")


def as_lists(prefixes):
    return [p.tolist() for p in prefixes]


def test_next_item_events_collapses_repeats_and_drops_short_sessions():
    prefixes, targets = next_item_events(session_table())
    assert as_lists(prefixes) == [[5], [5, 7], [5, 7, 5], [1]]
    assert targets.tolist() == [7, 5, 9, 2]
    assert targets.dtype == np.int64 and all(p.dtype == np.int64 for p in prefixes)


def test_next_item_events_split_and_min_length():
    prefixes, targets = next_item_events(session_table(), split="train")
    assert as_lists(prefixes) == [[8]] and targets.tolist() == [6]
    prefixes, targets = next_item_events(session_table(), min_session_length=3)
    assert targets.tolist() == [7, 5, 9]  # session 4 (length 2) dropped
    # A frame without `split` is taken whole.
    prefixes, targets = next_item_events(session_table().drop("split"))
    assert targets.tolist() == [7, 5, 9, 2, 6]


def event_pairs(prefixes, targets) -> list[tuple[tuple[int, ...], int]]:
    return [(tuple(p), t) for p, t in zip(as_lists(prefixes), targets.tolist(), strict=True)]


def test_next_item_events_sampling_is_deterministic_and_ordered():
    every = event_pairs(*next_item_events(session_table()))
    picked = event_pairs(*next_item_events(session_table(), max_events=2, seed=5))
    assert len(picked) == 2
    assert picked == event_pairs(*next_item_events(session_table(), max_events=2, seed=5))
    positions = [every.index(pair) for pair in picked]  # ValueError if not a real event
    assert positions == sorted(positions)
    assert event_pairs(*next_item_events(session_table(), max_events=100)) == every


def test_prefixes_are_read_only():
    prefixes, _ = next_item_events(session_table())
    with pytest.raises(ValueError):
        prefixes[1][0] = 99


def test_next_item_events_rejects_bad_input():
    with pytest.raises(ValueError, match="missing column"):
        next_item_events(session_table().drop("timestamp"))
    bad = session_table().with_columns(
        item_id=pl.when(pl.col("session_id") == 4).then(None).otherwise(pl.col("item_id"))
    )
    with pytest.raises(ValueError, match="'item_id' is null at row"):
        next_item_events(bad)


def test_session_metrics_with_controlled_recommender():
    # 4 events; the fake puts the target at rank 1, rank 3, nowhere, rank 21 (beyond k=20).
    # Recall@20 = 2/4 = 0.5; MRR@20 = (1 + 1/3 + 0 + 0) / 4 = 0.333333.
    prefixes = [np.array([1]), np.array([1, 2]), np.array([3]), np.array([4, 5])]
    targets = np.array([10, 11, 12, 13])
    target_and_rank = {(1,): (10, 1), (1, 2): (11, 3), (3,): None, (4, 5): (13, 21)}
    calls = []

    def recommend_session(batch, k):
        calls.append(len(batch))
        out = np.tile(np.arange(1000, 1000 + k + 5), (len(batch), 1))  # wider than k: cut
        for row, prefix in enumerate(batch):
            planted = target_and_rank[tuple(prefix.tolist())]
            if planted is not None:
                out[row, planted[1] - 1] = planted[0]
        return SimpleNamespace(item_ids=out, scores=np.zeros(out.shape))

    result = session_metrics(recommend_session, prefixes, targets, k=20, batch_size=3)
    assert calls == [3, 1]
    assert result["recall_at_20"] == pytest.approx(0.5)
    assert result["mrr_at_20"] == pytest.approx(1 / 3)
    assert result["n_events"] == 4


def test_session_metrics_accepts_tuples_and_handles_no_events():
    def always(batch, k):
        return np.tile(np.arange(k), (len(batch), 1)), None

    # target 0 at rank 1, target 4 at rank 5: recall 1, MRR (1 + 1/5) / 2 = 0.6.
    result = session_metrics(always, [np.array([9]), np.array([9])], np.array([0, 4]), k=5)
    assert result == {"recall_at_5": 1.0, "mrr_at_5": pytest.approx(0.6), "n_events": 2}
    empty = session_metrics(always, [], np.array([], dtype=np.int64))
    assert empty["n_events"] == 0 and math.isnan(empty["recall_at_20"])


def test_session_metrics_rejects_wrong_shapes():
    def wrong(batch, k):
        return SimpleNamespace(item_ids=np.zeros((len(batch) + 1, k), dtype=np.int64))

    with pytest.raises(ValueError, match="shape"):
        session_metrics(wrong, [np.array([1])], np.array([2]))
    with pytest.raises(ValueError, match="prefixes but"):
        session_metrics(wrong, [np.array([1])], np.array([2, 3]))


def test_events_feed_metrics_end_to_end():
    # A "repeat the last item" recommender never hits (repeats were collapsed): recall 0.
    prefixes, targets = next_item_events(session_table())

    def last_item(batch, k):
        out = np.full((len(batch), k), -1, dtype=np.int64)
        out[:, 0] = [p[-1] for p in batch]
        return SimpleNamespace(item_ids=out)

    assert session_metrics(last_item, prefixes, targets)["recall_at_20"] == 0.0
