"""Top-K ranking metrics computed from stored recommendation lists.

The metrics are a function of the long ``eval_recommendations`` table (``model, user_id, rank,
item_id, score``; ``rank`` 1-based and contiguous per user) and the ground truth, nothing else,
so anyone can recompute ``model_metrics`` from the two tables.

Definitions, per evaluated user ``u`` with relevant set ``R`` (|R| ≥ 1) and list ``L``; a *hit*
is a list position ``r ≤ K`` whose item is in ``R``:

- ``precision_at_K`` = hits / K. The denominator is K, not the list length, so a list shorter
  than K is penalised for the slots it left empty.
- ``recall_at_K`` = hits / |R| (standard recall: a user with more than K relevant items cannot
  reach 1).
- ``ndcg_at_K``: binary gains, DCG = Σ_hits 1 / log2(r + 1); IDCG = Σ_{i=1..min(|R|, K)}
  1 / log2(i + 1), the DCG of a list with all achievable hits on top.
- ``map_at_K`` = (1 / min(|R|, K)) · Σ_{hit ranks r ≤ K} precision@r, where precision@r counts
  the hits at ranks ≤ r.
- ``hit_rate_at_K`` = 1 if at least one hit, else 0.
- ``mrr_at_K`` = 1 / rank of the first hit, 0 when no hit in the top K.
- ``coverage_at_{max K}`` = distinct items over all lists in ``recommendations`` (ranks ≤ max K,
  evaluated or not) / ``n_catalogue_items``; only when the catalogue size is given.

Users evaluated are the distinct ``user_id`` of ``relevant``: a relevant user without a list
scores 0 on every metric; a listed user without relevant items is not evaluated. The summary is
the unweighted mean over evaluated users (NaN when there are none).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

METRIC_KS = (10, 20)
METRIC_NAMES = ("precision", "recall", "ndcg", "map", "hit_rate", "mrr")

EVAL_RECOMMENDATIONS_SCHEMA = {
    "model": pl.Utf8,
    "user_id": pl.Int64,
    "rank": pl.Int32,  # 1-based, contiguous per user
    "item_id": pl.Int64,
    "score": pl.Float32,
}

# Score-matrix elements handled at once by top_k_from_scores: bounds its scratch to ~64 MB.
_CHUNK_ELEMENTS = 1 << 23
_SMALL_DTYPES = (np.float16, np.float32, np.bool_, np.int8, np.uint8, np.int16, np.uint16)


def metric_columns(ks: Sequence[int] = METRIC_KS) -> list[str]:
    """Per-user metric column names, in the order ``ranking_metrics`` writes them."""
    return [f"{name}_at_{k}" for k in ks for name in METRIC_NAMES]


def ranking_metrics(
    recommendations: pl.DataFrame,
    relevant: pl.DataFrame,
    ks: Sequence[int] = METRIC_KS,
    n_catalogue_items: int | None = None,
) -> tuple[dict[str, float], pl.DataFrame]:
    """Mean top-K metrics over the users of ``relevant`` and the per-user values.

    ``recommendations``: ``user_id, rank, item_id`` of one model (``score`` and a single-valued
    ``model`` column are ignored). ``relevant``: ``user_id, item_id`` ground-truth pairs
    (duplicates are dropped).
    Returns ``(summary, per_user)``; ``summary`` holds ``<metric>_at_<K>`` for every K, plus
    ``coverage_at_<max K>`` when ``n_catalogue_items`` is given and ``users_evaluated``;
    ``per_user`` holds ``user_id`` and one column per metric, sorted by ``user_id``.
    """
    ks = _check_ks(ks)
    k_max = max(ks)
    if "model" in recommendations.columns and recommendations["model"].n_unique() > 1:
        raise ValueError(
            "recommendations: column 'model' holds several models "
            f"{sorted(recommendations['model'].unique().to_list())}; pass one model's lists"
        )
    recs = _id_columns(recommendations, "recommendations", ("user_id", "rank", "item_id"))
    rel = _id_columns(relevant, "relevant", ("user_id", "item_id")).unique()
    _check_lists(recs)
    if n_catalogue_items is not None and n_catalogue_items <= 0:
        raise ValueError(f"n_catalogue_items must be positive, got {n_catalogue_items}")

    top = recs.filter(pl.col("rank") <= k_max)
    # Only hit rows matter: every metric is a sum over hits, normalised by K or |R|.
    hits = (
        top.join(rel, on=["user_id", "item_id"], how="inner")
        .sort("user_id", "rank")
        .with_columns(
            # precision@r at a hit = (hits at ranks ≤ r) / r = (ordinal of this hit) / r.
            prec_at_r=(pl.int_range(1, pl.len() + 1).over("user_id") / pl.col("rank")),
            gain=1.0 / (pl.col("rank").cast(pl.Float64) + 1.0).log(2),
        )
    )
    in_k = {k: pl.col("rank") <= k for k in ks}
    per_hit_user = hits.group_by("user_id").agg(
        pl.col("rank").min().alias("first_hit"),
        *[in_k[k].sum().alias(f"hits_{k}") for k in ks],
        *[pl.col("gain").filter(in_k[k]).sum().alias(f"dcg_{k}") for k in ks],
        *[pl.col("prec_at_r").filter(in_k[k]).sum().alias(f"ap_{k}") for k in ks],
    )
    users = (
        rel.group_by("user_id")
        .agg(n_rel=pl.len())
        .join(per_hit_user, on="user_id", how="left")
        .sort("user_id")
    )

    n_rel = users["n_rel"].to_numpy().astype(np.float64)
    first_hit = users["first_hit"].fill_null(0).to_numpy()
    ideal_dcg = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k_max + 2)))])
    columns: dict[str, np.ndarray] = {}
    for k in ks:
        n_hits = users[f"hits_{k}"].fill_null(0).to_numpy().astype(np.float64)
        ideal_hits = np.minimum(n_rel, k)
        columns[f"precision_at_{k}"] = n_hits / k
        columns[f"recall_at_{k}"] = n_hits / n_rel
        columns[f"ndcg_at_{k}"] = (
            users[f"dcg_{k}"].fill_null(0.0).to_numpy() / ideal_dcg[ideal_hits.astype(np.int64)]
        )
        columns[f"map_at_{k}"] = users[f"ap_{k}"].fill_null(0.0).to_numpy() / ideal_hits
        columns[f"hit_rate_at_{k}"] = (n_hits > 0).astype(np.float64)
        columns[f"mrr_at_{k}"] = np.where(
            (first_hit >= 1) & (first_hit <= k), 1.0 / np.maximum(first_hit, 1), 0.0
        )
    names = metric_columns(ks)
    per_user = pl.DataFrame(
        {"user_id": users["user_id"], **{name: columns[name] for name in names}}
    )

    n_users = per_user.height
    summary: dict[str, float] = {
        name: float(columns[name].mean()) if n_users else float("nan") for name in names
    }
    if n_catalogue_items is not None:
        n_distinct = top["item_id"].n_unique()
        summary[f"coverage_at_{k_max}"] = n_distinct / n_catalogue_items
    summary["users_evaluated"] = n_users
    return summary, per_user


def top_k_from_scores(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the ``k`` highest scores of each row, best first.

    Equal scores are ordered by lower column index, also at the top-K boundary, so the result
    never depends on ``argpartition``'s internal order. ``k`` is clipped to the number of
    columns. A 1-D ``scores`` is treated as one row and gives 1-D results. Use ``-inf`` (not NaN)
    for items that must never be recommended. Pass float32 (or narrower) scores where possible:
    they take a path whose speed does not depend on ties; float64 rows full of equal values
    (e.g. mostly zero) are several times slower.
    """
    scores = np.asarray(scores)
    one_row = scores.ndim == 1
    if one_row:
        scores = scores[None, :]
    if scores.ndim != 2:
        raise ValueError(f"scores must be 1-D or 2-D, got shape {scores.shape}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if np.issubdtype(scores.dtype, np.floating) and np.isnan(scores).any():
        row = int(np.flatnonzero(np.isnan(scores).any(axis=1))[0])
        raise ValueError(f"scores row {row} contains NaN; use -inf for excluded items")
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if n_rows == 0 or k == 0:
        return _maybe_squeeze(
            np.empty((n_rows, k), np.int64), np.empty((n_rows, k), scores.dtype), one_row
        )

    if _packable(scores.dtype) and n_cols < 1 << 32:
        idx = _top_k_packed(scores, k)
    else:
        idx = _top_k_partition(scores, k)
    vals = np.take_along_axis(scores, idx, axis=1)
    return _maybe_squeeze(idx, vals, one_row)


def lists_to_frame(
    user_ids: np.ndarray, item_ids: np.ndarray, scores: np.ndarray, model: str
) -> pl.DataFrame:
    """Turn ``(n, K)`` recommendation arrays into the long ``eval_recommendations`` frame.

    ``item_ids`` uses ``-1`` for empty slots; those are dropped and the remaining items of a row
    are ranked 1, 2, … in their column order, so ranks stay contiguous.
    """
    user_ids = np.asarray(user_ids)
    item_ids = np.asarray(item_ids)
    scores = np.asarray(scores)
    if item_ids.ndim != 2 or scores.shape != item_ids.shape:
        raise ValueError(
            f"item_ids and scores must be 2-D of the same shape, got {item_ids.shape} "
            f"and {scores.shape}"
        )
    if user_ids.shape != (item_ids.shape[0],):
        raise ValueError(
            f"user_ids must be 1-D with one entry per row of item_ids ({item_ids.shape[0]}), "
            f"got shape {user_ids.shape}"
        )
    kept = item_ids != -1
    ranks = np.cumsum(kept, axis=1, dtype=np.int32)
    rows = np.nonzero(kept)[0]
    frame = pl.DataFrame(
        {
            "user_id": user_ids[rows],
            "rank": ranks[kept],
            "item_id": item_ids[kept],
            "score": scores[kept],
        }
    )
    return frame.select(
        pl.lit(model, pl.Utf8).alias("model"),
        *[pl.col(c).cast(t) for c, t in EVAL_RECOMMENDATIONS_SCHEMA.items() if c != "model"],
    )


def frame_to_lists(frame: pl.DataFrame, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inverse of :func:`lists_to_frame`: (sorted user ids, ``(n, width)`` item ids, scores),
    ``-1`` / ``-inf`` where a user's list is shorter than ``width``; ranks past it are cut."""
    kept = frame.filter(pl.col("rank") <= width).sort("user_id", "rank")
    users, row = np.unique(kept["user_id"].to_numpy().astype(np.int64), return_inverse=True)
    col = kept["rank"].to_numpy().astype(np.int64) - 1
    items = np.full((users.size, width), -1, dtype=np.int64)
    scores = np.full((users.size, width), -np.inf, dtype=np.float32)
    items[row, col] = kept["item_id"].to_numpy()
    scores[row, col] = kept["score"].to_numpy()
    return users, items, scores


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1 or len(set(ks)) != len(ks):
        raise ValueError(f"ks must be distinct positive integers, got {ks}")
    return ks


def _id_columns(frame: pl.DataFrame, name: str, columns: tuple[str, ...]) -> pl.DataFrame:
    """The named columns as Int64, with a clear error for a missing, non-integer or null one."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; has {frame.columns}")
    for column in columns:
        dtype = frame.schema[column]
        if not dtype.is_integer():
            raise ValueError(f"{name}: column '{column}' must be integer, got {dtype}")
        nulls = frame[column].is_null()
        if nulls.any():
            row = int(nulls.arg_true()[0])
            raise ValueError(f"{name}: column '{column}' is null at row {row}")
    return frame.select(pl.col(c).cast(pl.Int64) for c in columns)


def _check_lists(recs: pl.DataFrame) -> None:
    """Ranks 1..n without gaps or repeats and no repeated item within a user's list."""
    if recs.height == 0:
        return
    bad = (
        recs.group_by("user_id")
        .agg(
            n=pl.len(),
            min_rank=pl.col("rank").min(),
            max_rank=pl.col("rank").max(),
            n_ranks=pl.col("rank").n_unique(),
            n_items=pl.col("item_id").n_unique(),
        )
        .filter(
            (pl.col("min_rank") != 1)
            | (pl.col("max_rank") != pl.col("n"))
            | (pl.col("n_ranks") != pl.col("n"))
            | (pl.col("n_items") != pl.col("n"))
        )
    )
    if bad.height:
        row = bad.sort("user_id").row(0, named=True)
        if row["n_items"] != row["n"]:
            problem = "repeats an item (column 'item_id')"
        else:
            problem = "has ranks that are not 1..n without gaps or repeats (column 'rank')"
        raise ValueError(
            f"recommendations: the list of user_id={row['user_id']} {problem}; "
            f"{bad.height} user(s) affected"
        )


def _packable(dtype: np.dtype) -> bool:
    return dtype.type in _SMALL_DTYPES or dtype.type in (np.int32, np.uint32)


def _ordered_uint32(block: np.ndarray) -> np.ndarray:
    """``block`` (a packable dtype) as uint32 keys with the same order and the same ties."""
    if block.dtype == np.int32:
        return block.view(np.uint32) ^ np.uint32(1 << 31)
    if block.dtype == np.uint32:
        return block
    # + 0.0 turns -0.0 into +0.0: equal floats must map to equal keys.
    bits = (block.astype(np.float32) + np.float32(0.0)).view(np.uint32)
    # IEEE trick: flip all bits of negatives, only the sign bit of the rest.
    return np.where(bits >> 31 == 1, ~bits, bits | np.uint32(1 << 31))


def _top_k_packed(scores: np.ndarray, k: int) -> np.ndarray:
    """Top-k columns, best first, through unique (score, reversed column) uint64 keys.

    Unique keys make the selection exact under ties and keep argpartition fast: numpy's
    introselect slows down ~10x on rows full of equal values (e.g. zero scores).
    """
    n_rows, n_cols = scores.shape
    reversed_col = (n_cols - 1 - np.arange(n_cols, dtype=np.int64)).astype(np.uint64)
    out = np.empty((n_rows, k), dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // n_cols)
    for a in range(0, n_rows, step):
        b = min(a + step, n_rows)
        keys = (_ordered_uint32(scores[a:b]).astype(np.uint64) << np.uint64(32)) | reversed_col
        top = np.take_along_axis(keys, np.argpartition(keys, n_cols - k, axis=1)[:, -k:], 1)
        top = np.sort(top, axis=1)[:, ::-1]
        out[a:b] = (n_cols - 1) - (top & np.uint64(0xFFFFFFFF)).astype(np.int64)
    return out


def _top_k_partition(scores: np.ndarray, k: int) -> np.ndarray:
    """Top-k columns, best first, for 64-bit scores: argpartition, then exact tie repair."""
    n_cols = scores.shape[1]
    idx = np.argpartition(scores, n_cols - k, axis=1)[:, n_cols - k :].astype(np.int64)
    kth = np.take_along_axis(scores, idx, axis=1).min(axis=1)
    # argpartition picks an arbitrary subset of the items tied with the k-th value; those rows
    # are redone so that the lowest column indices among the tied items win.
    tied_rows = np.flatnonzero(np.count_nonzero(scores >= kth[:, None], axis=1) > k)
    step = max(1, _CHUNK_ELEMENTS // n_cols)
    for start in range(0, tied_rows.size, step):
        rows = tied_rows[start : start + step]
        block = scores[rows]
        above = block > kth[rows, None]
        equal = block == kth[rows, None]
        need = k - above.sum(axis=1)
        chosen = above | (equal & (np.cumsum(equal, axis=1, dtype=np.int32) <= need[:, None]))
        idx[rows] = np.nonzero(chosen)[1].reshape(rows.size, k)
    vals = np.take_along_axis(scores, idx, axis=1)
    # lexsort: last key is primary; descending score, then ascending column.
    order = np.lexsort((idx, _descending_key(vals)), axis=1)
    return np.take_along_axis(idx, order, axis=1)


def _descending_key(values: np.ndarray) -> np.ndarray:
    if np.issubdtype(values.dtype, np.unsignedinteger):
        return np.iinfo(values.dtype).max - values
    if np.issubdtype(values.dtype, np.bool_):
        return ~values
    return -values


def _maybe_squeeze(
    idx: np.ndarray, vals: np.ndarray, one_row: bool
) -> tuple[np.ndarray, np.ndarray]:
    return (idx[0], vals[0]) if one_row else (idx, vals)
