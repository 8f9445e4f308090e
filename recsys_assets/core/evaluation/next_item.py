"""Next-item evaluation of session-aware models, the protocol of the GRU4Rec papers.

Each session of the evaluated split is replayed item by item: after seeing the first ``t``
items the model ranks the catalogue and is scored on the item at position ``t``. Consecutive
repeats of one item inside a session are collapsed first (re-viewing the same page is not a
"next item"), as in Hidasi et al. 2016/2018. Recall@K here is the hit rate of the single
target in the top K and MRR@K the mean reciprocal rank of the target (0 outside the top K).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl

_REQUIRED = ("session_id", "item_id", "timestamp")


def next_item_events(
    splits_or_interactions: pl.DataFrame,
    split: str = "test",
    min_session_length: int = 2,
    max_events: int | None = None,
    seed: int = 0,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Prefixes and targets of every next-item event in the sessions of one split.

    Reads ``session_id, item_id, timestamp`` (and ``split`` when the frame has it; a frame
    without ``split`` is taken whole). Sessions are ordered by ``timestamp`` (input order breaks
    ties), consecutive repeats are collapsed, and sessions shorter than ``min_session_length``
    after collapsing are dropped. For a session ``s_0 … s_{L-1}`` the events are
    ``(s_0..s_{t-1}) -> s_t`` for ``t = 1 … L-1``. ``max_events`` keeps a uniform sample of
    events drawn with ``seed``, in their original order.

    Returns ``(prefixes, targets)``: a list of int64 arrays of external item ids and an int64
    array. The prefixes are read-only views into one shared array.
    """
    frame = splits_or_interactions
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"next_item_events: missing column(s) {missing}; has {frame.columns}")
    if min_session_length < 1:
        raise ValueError(f"min_session_length must be at least 1, got {min_session_length}")
    if max_events is not None and max_events < 0:
        raise ValueError(f"max_events must be non-negative, got {max_events}")
    if "split" in frame.columns:
        frame = frame.filter(pl.col("split") == split)
    for column in _REQUIRED:
        nulls = frame[column].is_null()
        if nulls.any():
            raise ValueError(
                f"next_item_events: column '{column}' is null at row {int(nulls.arg_true()[0])}"
                f" of split '{split}'"
            )

    sid, item = pl.col("session_id"), pl.col("item_id")
    sessions = (
        frame.select(sid.cast(pl.Int64), item.cast(pl.Int64), pl.col("timestamp"))
        .sort("session_id", "timestamp", maintain_order=True)
        .filter(((item != item.shift(1)) | (sid != sid.shift(1))).fill_null(True))
        .with_columns(length=pl.len().over("session_id"))
        .filter(pl.col("length") >= max(min_session_length, 2))
    )
    items = sessions["item_id"].to_numpy().copy()
    items.flags.writeable = False
    session_ids = sessions["session_id"].to_numpy()

    positions = np.arange(items.size)
    is_start = np.ones(items.size, dtype=bool)
    is_start[1:] = session_ids[1:] != session_ids[:-1]
    # Index of each row's session start, carried forward over the session.
    starts = np.maximum.accumulate(np.where(is_start, positions, 0))
    targets_at = np.flatnonzero(~is_start)
    if max_events is not None and max_events < targets_at.size:
        rng = np.random.default_rng(seed)
        targets_at = np.sort(rng.choice(targets_at, size=max_events, replace=False))
    # One slice per event is the output format itself; views keep memory linear in events.
    bounds = zip(starts[targets_at].tolist(), targets_at.tolist(), strict=True)
    prefixes = [items[s:e] for s, e in bounds]
    return prefixes, items[targets_at].copy()


def session_metrics(
    recommend_session: Callable[[list[np.ndarray], int], Any],
    prefixes: Sequence[np.ndarray],
    targets: np.ndarray,
    k: int = 20,
    batch_size: int = 4096,
) -> dict[str, float]:
    """Recall@k (hit rate of the target) and MRR@k of a session recommender over the events.

    ``recommend_session(prefixes, k)`` returns an object with ``item_ids`` of shape ``(n, ≤k)``
    (a ``Recommender.recommend_session`` result; a plain ``(item_ids, scores)`` tuple works too),
    ``-1`` for empty slots. Returns ``recall_at_<k>``, ``mrr_at_<k>`` (NaN without events) and
    ``n_events``.
    """
    targets = np.asarray(targets, dtype=np.int64)
    if len(prefixes) != targets.size:
        raise ValueError(f"session_metrics: {len(prefixes)} prefixes but {targets.size} targets")
    if k < 1 or batch_size < 1:
        raise ValueError(f"k and batch_size must be positive, got k={k}, batch_size={batch_size}")
    reciprocal_rank = np.zeros(targets.size, dtype=np.float64)
    hit = np.zeros(targets.size, dtype=bool)
    for start in range(0, targets.size, batch_size):
        end = min(start + batch_size, targets.size)
        result = recommend_session(list(prefixes[start:end]), k)
        item_ids = np.asarray(result.item_ids if hasattr(result, "item_ids") else result[0])
        if item_ids.ndim != 2 or item_ids.shape[0] != end - start:
            raise ValueError(
                f"recommend_session returned item_ids of shape {item_ids.shape} for a batch of "
                f"{end - start} prefixes (events {start}..{end - 1}); expected ({end - start}, k)"
            )
        matches = item_ids[:, :k] == targets[start:end, None]
        batch_hit = matches.any(axis=1)
        hit[start:end] = batch_hit
        reciprocal_rank[start:end] = np.where(batch_hit, 1.0 / (matches.argmax(axis=1) + 1), 0.0)
    n_events = int(targets.size)
    return {
        f"recall_at_{k}": float(hit.mean()) if n_events else float("nan"),
        f"mrr_at_{k}": float(reciprocal_rank.mean()) if n_events else float("nan"),
        "n_events": n_events,
    }
