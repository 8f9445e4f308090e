"""Top-K ranking metrics on hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from recsys_assets.core.evaluation.metrics import (
    EVAL_RECOMMENDATIONS_SCHEMA,
    lists_to_frame,
    metric_columns,
    ranking_metrics,
    top_k_from_scores,
)

L3, L4 = 1 / math.log2(3), 1 / math.log2(4)  # DCG gains at ranks 2 and 3


def recs(lists: dict[int, list[int]]) -> pl.DataFrame:
    rows = [(u, r, i) for u, items in lists.items() for r, i in enumerate(items, start=1)]
    return pl.DataFrame(
        rows, schema={"user_id": pl.Int64, "rank": pl.Int64, "item_id": pl.Int64}, orient="row"
    )


def rel(pairs: dict[int, list[int]]) -> pl.DataFrame:
    rows = [(u, i) for u, items in pairs.items() for i in items]
    return pl.DataFrame(rows, schema={"user_id": pl.Int64, "item_id": pl.Int64}, orient="row")


def user_row(per_user: pl.DataFrame, user: int) -> dict:
    return per_user.filter(pl.col("user_id") == user).row(0, named=True)


def assert_metrics(row: dict, k: int, **expected: float) -> None:
    for name, value in expected.items():
        assert row[f"{name}_at_{k}"] == pytest.approx(value, abs=1e-9), name


FILLER = list(range(100, 120))  # items never relevant


def test_perfect_list():
    # relevant {1, 2} on top: P@10 = 2/10, recall 1, DCG = IDCG, AP = (1/1 + 2/2)/2 = 1.
    _, per_user = ranking_metrics(recs({7: [1, 2, *FILLER[:8]]}), rel({7: [1, 2]}))
    assert_metrics(
        user_row(per_user, 7), 10, precision=0.2, recall=1, ndcg=1, map=1, hit_rate=1, mrr=1
    )


def test_no_hits_scores_zero():
    _, per_user = ranking_metrics(recs({7: FILLER}), rel({7: [1, 2]}))
    for k in (10, 20):
        assert_metrics(
            user_row(per_user, 7), k, precision=0, recall=0, ndcg=0, map=0, hit_rate=0, mrr=0
        )


def test_hits_at_ranks_1_and_3_with_two_relevant():
    # DCG = 1 + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3) = 1.630930 -> NDCG 0.919721.
    # AP = (1/2) * (1/1 + 2/3) = 0.833333.
    _, per_user = ranking_metrics(recs({7: [1, 100, 2, *FILLER[1:8]]}), rel({7: [1, 2]}))
    row = user_row(per_user, 7)
    assert_metrics(
        row, 10, precision=0.2, recall=1, ndcg=1.5 / (1 + L3), map=5 / 6, hit_rate=1, mrr=1
    )
    assert row["ndcg_at_10"] == pytest.approx(0.919721, abs=1e-6)


def test_more_relevant_than_k_normalisation():
    # 5 relevant items, list [x, a, b] with hits at ranks 2 and 3.
    # K=2: P = 1/2, R = 1/5, DCG = 1/log2(3) = 0.630930, IDCG over min(5,2)=2 ideal hits
    #      = 1.630930 -> NDCG 0.386853; AP = (1/2)(1/2) = 0.25; MRR = 1/2.
    # K=3: P = 2/3, R = 2/5, DCG = 0.630930 + 0.5, IDCG = 2.130930 -> NDCG 0.530721;
    #      AP = (1/3)(1/2 + 2/3) = 0.388889.
    _, per_user = ranking_metrics(recs({1: [100, 1, 2]}), rel({1: [1, 2, 3, 4, 5]}), ks=(2, 3))
    row = user_row(per_user, 1)
    assert_metrics(
        row, 2, precision=0.5, recall=0.2, ndcg=L3 / (1 + L3), map=0.25, hit_rate=1, mrr=0.5
    )
    assert_metrics(
        row,
        3,
        precision=2 / 3,
        recall=0.4,
        ndcg=(L3 + 0.5) / (1 + L3 + 0.5),
        map=(0.5 + 2 / 3) / 3,
        hit_rate=1,
        mrr=0.5,
    )
    assert row["ndcg_at_2"] == pytest.approx(0.386853, abs=1e-6)
    assert row["ndcg_at_3"] == pytest.approx(0.530721, abs=1e-6)


def test_fewer_relevant_than_k_normalisation():
    # 1 relevant item at rank 2: IDCG and the MAP denominator use min(|R|, K) = 1, not K.
    # NDCG = 1/log2(3) = 0.630930; AP = (1/1) * (1/2) = 0.5; recall = 1; P@10 = 0.1.
    _, per_user = ranking_metrics(recs({1: [100, 1, *FILLER[1:8]]}), rel({1: [1]}))
    assert_metrics(
        user_row(per_user, 1), 10, precision=0.1, recall=1, ndcg=L3, map=0.5, hit_rate=1, mrr=0.5
    )


def test_k10_versus_k20():
    # Only hit at rank 15: nothing at K=10; at K=20 P = 1/20, R = 1, NDCG = 1/log2(16) = 0.25,
    # AP = 1/15, MRR = 1/15.
    items = FILLER[:14] + [1] + [200, 201, 202, 203, 204]
    _, per_user = ranking_metrics(recs({3: items}), rel({3: [1]}))
    row = user_row(per_user, 3)
    assert_metrics(row, 10, precision=0, recall=0, ndcg=0, map=0, hit_rate=0, mrr=0)
    assert_metrics(row, 20, precision=0.05, recall=1, ndcg=0.25, map=1 / 15, hit_rate=1, mrr=1 / 15)


def test_short_list_is_penalised_in_precision_only():
    # One-item list [1], relevant {1}: P@10 = 1/10 (K in the denominator), P@20 = 1/20.
    _, per_user = ranking_metrics(recs({1: [1]}), rel({1: [1]}))
    row = user_row(per_user, 1)
    assert_metrics(row, 10, precision=0.1, recall=1, ndcg=1, map=1, hit_rate=1, mrr=1)
    assert_metrics(row, 20, precision=0.05, recall=1, ndcg=1, map=1, hit_rate=1, mrr=1)


def test_user_without_list_counts_as_zero_and_listed_user_without_truth_is_skipped():
    # User 1 perfect (hit rate 1), user 2 relevant but no list (0), user 9 listed, no truth.
    summary, per_user = ranking_metrics(recs({1: [1], 9: [1, 2]}), rel({1: [1], 2: [5, 6]}))
    assert summary["users_evaluated"] == 2
    assert per_user["user_id"].to_list() == [1, 2]
    assert_metrics(
        user_row(per_user, 2), 10, precision=0, recall=0, ndcg=0, map=0, hit_rate=0, mrr=0
    )
    assert summary["hit_rate_at_10"] == pytest.approx(0.5)
    assert summary["precision_at_10"] == pytest.approx(0.05)  # (0.1 + 0) / 2


def test_empty_recommendations_frame():
    empty = recs({})
    summary, per_user = ranking_metrics(empty, rel({1: [1], 2: [2]}), n_catalogue_items=10)
    assert summary["users_evaluated"] == 2
    assert per_user.height == 2
    for name in metric_columns():
        assert summary[name] == 0.0
    assert summary["coverage_at_20"] == 0.0


def test_no_relevant_users_gives_nan():
    summary, per_user = ranking_metrics(recs({1: [1]}), rel({}))
    assert summary["users_evaluated"] == 0 and per_user.height == 0
    assert math.isnan(summary["ndcg_at_10"])


def test_summary_is_mean_of_per_user_and_keys():
    summary, per_user = ranking_metrics(
        recs({1: [1, 100, 2], 2: [100, 3]}), rel({1: [1, 2], 2: [3, 4, 5]}), n_catalogue_items=8
    )
    assert set(summary) == {*metric_columns(), "coverage_at_20", "users_evaluated"}
    assert per_user.columns == ["user_id", *metric_columns()]
    for name in metric_columns():
        assert summary[name] == pytest.approx(per_user[name].mean())
    # user 2: hit at rank 2, |R| = 3 -> MRR 1/2, AP@10 = (1/2) / 3; user 1: MRR 1.
    assert summary["mrr_at_10"] == pytest.approx((1 + 0.5) / 2)
    assert summary["map_at_10"] == pytest.approx((5 / 6 + 1 / 6) / 2)
    # distinct items {1, 100, 2, 3} out of 8.
    assert summary["coverage_at_20"] == pytest.approx(0.5)


def test_coverage_counts_only_top_k_max_over_all_lists():
    # Ranks 21+ do not count; user 9 (not evaluated) still counts: items {1..20} ∪ {50} = 21.
    long_list = list(range(1, 26))
    summary, _ = ranking_metrics(
        recs({1: long_list, 9: [50, 1]}), rel({1: [1]}), n_catalogue_items=42
    )
    assert summary["coverage_at_20"] == pytest.approx(21 / 42)
    summary, _ = ranking_metrics(recs({1: long_list}), rel({1: [1]}))
    assert "coverage_at_20" not in summary


def test_duplicate_relevant_pairs_are_ignored():
    once, _ = ranking_metrics(recs({1: [1, 2]}), rel({1: [1, 3]}))
    twice, _ = ranking_metrics(recs({1: [1, 2]}), rel({1: [1, 1, 3]}))
    assert once == twice


@pytest.mark.parametrize(
    ("lists_frame", "message"),
    [
        (pl.DataFrame({"user_id": [1, 1], "rank": [1, 2], "item_id": [5, 5]}), "repeats an item"),
        (pl.DataFrame({"user_id": [1, 1], "rank": [1, 3], "item_id": [5, 6]}), "user_id=1"),
        (pl.DataFrame({"user_id": [1, 1], "rank": [2, 2], "item_id": [5, 6]}), "'rank'"),
        (pl.DataFrame({"user_id": [1], "item_id": [5]}), "missing column"),
        (pl.DataFrame({"user_id": [1, None], "rank": [1, 2], "item_id": [5, 6]}), "row 1"),
        (
            pl.DataFrame(
                {"model": ["a", "b"], "user_id": [1, 1], "rank": [1, 1], "item_id": [5, 6]}
            ),
            "several models",
        ),
    ],
)
def test_bad_lists_are_rejected(lists_frame, message):
    with pytest.raises(ValueError, match=message):
        ranking_metrics(lists_frame, rel({1: [5]}))


DTYPES = [np.float32, np.float64, np.int32, np.int64, np.uint8, np.float16]


@pytest.mark.parametrize("dtype", DTYPES)
def test_top_k_from_scores_orders_and_breaks_ties_by_lower_index(dtype):
    scores = np.array(
        [
            [1, 9, 5, 9, 3],
            [7, 7, 7, 7, 7],  # all tied: lowest indices win, in index order
            [0, 20, 10, 10, 10],  # tie at the K boundary: columns 2 and 3, not 4
        ],
        dtype=dtype,
    )
    idx, vals = top_k_from_scores(scores, 3)
    assert idx.tolist() == [[1, 3, 2], [0, 1, 2], [1, 2, 3]]
    assert vals.tolist() == [[9, 9, 5], [7, 7, 7], [20, 10, 10]]
    assert idx.dtype == np.int64 and vals.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_top_k_from_scores_ties_match_a_stable_sort_on_random_data(dtype):
    rng = np.random.default_rng(3)
    low = 0 if dtype == np.uint8 else -2
    scores = rng.integers(low, 3, size=(300, 50)).astype(dtype)  # many ties, negatives
    if np.issubdtype(dtype, np.floating):
        scores[:, 7] = -np.inf
        scores[::2, 9] = -0.0  # equal to 0.0: must tie with it, not rank below
    idx, vals = top_k_from_scores(scores, 10)
    expected = np.argsort(-scores.astype(np.float64), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_array_equal(vals, np.take_along_axis(scores, expected, axis=1))


def test_top_k_from_scores_edge_cases():
    idx, vals = top_k_from_scores(np.array([3, 1, 2]), 10)  # 1-D, k clipped to 3
    assert idx.tolist() == [0, 2, 1] and vals.tolist() == [3, 2, 1]
    with pytest.raises(ValueError, match="NaN"):
        top_k_from_scores(np.array([[1.0, np.nan]]), 1)
    with pytest.raises(ValueError, match="k must be"):
        top_k_from_scores(np.ones((2, 2)), 0)


def test_lists_to_frame_drops_pads():
    items = np.array([[5, 6, -1], [-1, -1, -1], [7, -1, -1]])
    scores = np.array([[0.9, 0.8, 0.0], [0, 0, 0], [0.5, 0, 0]], dtype=np.float32)
    frame = lists_to_frame(np.array([10, 11, 12]), items, scores, "als")
    assert frame.schema == pl.Schema(EVAL_RECOMMENDATIONS_SCHEMA)
    assert frame.rows() == [
        ("als", 10, 1, 5, pytest.approx(0.9)),
        ("als", 10, 2, 6, pytest.approx(0.8)),
        ("als", 12, 1, 7, pytest.approx(0.5)),
    ]
    assert lists_to_frame(np.array([1]), np.array([[-1]]), np.array([[0.0]]), "m").height == 0
    with pytest.raises(ValueError, match="one entry per row"):
        lists_to_frame(np.array([1, 2]), items, scores, "als")


def test_scores_to_metrics_roundtrip():
    # Scores put item 4 first and item 0 third for user 100; relevant {0, 4}: hits at 1 and 3,
    # the same numbers as test_hits_at_ranks_1_and_3_with_two_relevant.
    scores = np.array([[0.5, 0.1, 0.6, 0.0, 0.9]])
    idx, vals = top_k_from_scores(scores, 3)
    frame = lists_to_frame(np.array([100]), idx, vals, "m")
    summary, _ = ranking_metrics(frame, rel({100: [0, 4]}), ks=(10,))
    assert summary["ndcg_at_10"] == pytest.approx(1.5 / (1 + L3))
    assert summary["map_at_10"] == pytest.approx(5 / 6)
