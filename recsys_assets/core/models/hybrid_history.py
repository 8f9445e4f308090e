"""The Hybrid's two phases from one :class:`TrainingData`: a history and a label period.

``fit(training_data)`` receives one set of interactions (the model asset passes train+valid,
tuning passes train). The Hybrid cuts the *last* ``label_fraction`` of those events by time as
its label period: the source models are fitted on everything before the cut, their candidates
for the label period's users are labelled with what those users went on to touch, and the
re-ranker learns from that. With train+valid (70 % + 10 % of the events) and the default
fraction 1/8, the cut falls on the train/valid boundary, so the re-ranker learns from the
validation split's outcomes of models fitted on train only; test is never part of the input.

The cut follows ``splits.py``: events sharing the cut's timestamp stay in the history. A caller
that knows the train/valid boundary (the graph) gives it instead (:func:`given_cutoff`).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys_assets.core.data.schemas import DEFAULT_EVENT_WEIGHTS, DEFAULT_SESSION_GAP_MINUTES
from recsys_assets.core.data.training_data import MS_PER_DAY, TrainingData

_GAP_MS = DEFAULT_SESSION_GAP_MINUTES * 60_000


def label_cutoff(data: TrainingData, label_fraction: float) -> int:
    """Timestamp of the last history event: the first ``1 - label_fraction`` of events by time."""
    if not 0 < label_fraction < 1:
        raise ValueError(f"label_fraction must be in (0, 1), got {label_fraction!r}")
    times = np.sort(data.event_time)
    n = times.size
    k = min(max(math.floor(n * (1.0 - label_fraction) + 0.5), 1), n)
    cutoff = int(times[k - 1])
    if cutoff >= int(times[-1]):
        raise ValueError(
            f"hybrid: cannot cut a label period from {n} events: the last {label_fraction:.0%} "
            "share the final timestamp (too little or too coarse training data)"
        )
    return cutoff


def given_cutoff(data: TrainingData, history_end_ms: int) -> int:
    """``history_end_ms`` as the label cut of ``data``, checked to leave events on both sides
    (the graph passes the end of the train split, so the label period is the valid split)."""
    first, last = int(data.event_time.min()), int(data.event_time.max())
    if not first <= history_end_ms < last:
        raise ValueError(
            f"hybrid: history_end_ms {history_end_ms} leaves no history or no label period: "
            f"the training events run from {first} to {last}"
        )
    return int(history_end_ms)


def history_before(data: TrainingData, cutoff_ms: int) -> TrainingData:
    """``data`` restricted to events at or before ``cutoff_ms``, with the same id maps.

    Keeping every user and item (rows/columns of the full data, empty where they only appear
    later) makes candidate columns and label rows of the two phases the same indices.
    ``user_item`` is rebuilt from the raw event weights (the assets build it undecayed).
    """
    keep = data.event_time <= cutoff_ms
    if not keep.any():
        raise ValueError(f"hybrid: no training events at or before {cutoff_ms}")
    return events_subset(data, keep)


def users_subset(data: TrainingData, user_rows: np.ndarray) -> TrainingData:
    """``data`` with only the events of ``user_rows`` (the other rows stay, empty), same id maps.

    The history phase fits its sources on a sample of users at large scale: the label users
    keep their whole history, so their candidates are what a model fitted on everyone's history
    would propose from the same evidence, while the fits cost a fraction of the full ones.
    """
    keep_user = np.zeros(data.n_users, dtype=bool)
    keep_user[user_rows] = True
    return events_subset(data, keep_user[data.event_user])


def events_subset(data: TrainingData, keep: np.ndarray) -> TrainingData:
    """``data`` restricted to the events where ``keep`` (a mask over ``event_*``), same id maps;
    ``user_item``, sessions and user features are rebuilt from the kept events."""
    ev_user, ev_item = data.event_user[keep], data.event_item[keep]
    ev_weight, ev_time = data.event_weight[keep], data.event_time[keep]
    user_item = sp.csr_matrix(
        (ev_weight, (ev_user, ev_item)), shape=(data.n_users, data.n_items), dtype=np.float32
    )
    user_item.sum_duplicates()
    user_item.sort_indices()
    indptr, items, users = _kept_sessions(data, keep)
    return TrainingData(
        user_item=user_item,
        user_ids=data.user_ids,
        item_ids=data.item_ids,
        item_category=data.item_category,
        item_ancestors=data.item_ancestors,
        category_ids=data.category_ids,
        item_price=data.item_price,
        item_price_bucket=data.item_price_bucket,
        item_available=data.item_available,
        user_features=_user_features(data, ev_user, ev_item, ev_weight, ev_time, users),
        session_indptr=indptr,
        session_items=items,
        session_users=users,
        event_user=ev_user,
        event_item=ev_item,
        event_weight=ev_weight,
        event_time=ev_time,
        reference_ms=int(ev_time.max()) if ev_time.size else data.reference_ms,
    )


def label_matrix(data: TrainingData, history: TrainingData, cutoff_ms: int) -> sp.csr_matrix:
    """(n_users, n_items) 0/1: items a user with history touched after the cut and not before.

    The same rule as the test targets (``holdout_targets``): already-seen items are excluded.
    """
    after = data.event_time > cutoff_ms
    has_history = np.diff(history.user_item.indptr) > 0
    users, items = data.event_user[after], data.event_item[after]
    ok = has_history[users]
    labels = sp.csr_matrix(
        (np.ones(int(ok.sum()), np.float32), (users[ok], items[ok])),
        shape=(data.n_users, data.n_items),
    )
    labels.sum_duplicates()
    labels.data[:] = 1.0
    seen = history.user_item.copy()
    seen.data[:] = 1.0
    labels = (labels - labels.multiply(seen)).tocsr()
    labels.eliminate_zeros()
    labels.sort_indices()
    return labels


def _kept_sessions(data: TrainingData, keep: np.ndarray):
    """Session arrays of the kept events: each session keeps its kept events, empty ones dropped.

    Session ids are numbered per user in time order (interactions.py), so the time-sorted events
    stably sorted by user line up with ``session_items``; when that does not hold (a
    TrainingData from elsewhere) sessions are rebuilt from the kept events with the cleaning
    step's 30-minute gap.
    """
    order = np.argsort(data.event_user, kind="stable")
    if np.array_equal(data.event_item[order], data.session_items):
        kept = keep[order]
        session_of = np.repeat(np.arange(data.session_users.size), np.diff(data.session_indptr))
        counts = np.bincount(session_of[kept], minlength=data.session_users.size)
        nonempty = counts > 0
        indptr = np.r_[0, np.cumsum(counts[nonempty])].astype(np.int64)
        return indptr, data.session_items[kept], data.session_users[nonempty]
    idx = np.flatnonzero(keep)
    by_user = idx[np.argsort(data.event_user[idx], kind="stable")]
    user, time = data.event_user[by_user], data.event_time[by_user]
    starts = np.flatnonzero(np.r_[True, (user[1:] != user[:-1]) | (np.diff(time) > _GAP_MS)])
    indptr = np.r_[starts, by_user.size].astype(np.int64)
    return indptr, data.event_item[by_user].astype(np.int32), user[starts].astype(np.int32)


def _user_features(data, ev_user, ev_item, ev_weight, ev_time, session_users) -> pl.DataFrame:
    """The columns of ``data.user_features`` recomputed from the kept events only.

    Event types come back from the weights (the contract's default weights); the root-category
    shares are those of the root columns ``data.user_features`` carries.
    """
    root_cols = [c for c in data.user_features.columns if c.startswith("root_share_")]
    root_ids = np.array([int(c.removeprefix("root_share_")) for c in root_cols], dtype=np.int64)
    cat = data.item_category[ev_item]
    anc = data.item_ancestors[ev_item]  # one row per event: the item's category path
    in_root = np.zeros((ev_item.size, root_ids.size), dtype=np.float32)
    if root_ids.size:
        root_col = np.searchsorted(data.category_ids, root_ids)
        in_root = anc[:, root_col].toarray() * (cat >= 0)[:, None]
    frame = pl.DataFrame(
        {
            "user": ev_user,
            "item": ev_item,
            "weight": ev_weight,
            "timestamp": ev_time,
            **{c: in_root[:, j] for j, c in enumerate(root_cols)},
        }
    )
    sessions = np.bincount(session_users, minlength=data.n_users)
    agg = (
        frame.group_by("user")
        .agg(
            pl.len().cast(pl.Int64).alias("n_events"),
            pl.col("item").n_unique().cast(pl.Int64).alias("n_items"),
            (pl.col("timestamp") // MS_PER_DAY).n_unique().cast(pl.Int64).alias("days_active"),
            (pl.col("weight") == DEFAULT_EVENT_WEIGHTS["addtocart"])
            .sum()
            .cast(pl.Int64)
            .alias("n_addtocart"),
            (pl.col("weight") == DEFAULT_EVENT_WEIGHTS["transaction"])
            .sum()
            .cast(pl.Int64)
            .alias("n_transactions"),
            pl.col("weight").sum().cast(pl.Float32).alias("total_weight"),
            pl.col("timestamp").min().alias("first_ms"),
            pl.col("timestamp").max().alias("last_ms"),
            *[pl.col(c).mean().cast(pl.Float32).alias(c) for c in root_cols],
        )
        .sort("user")
    )
    user_rows = agg["user"].to_numpy()
    return agg.with_columns(
        pl.Series("user_id", data.user_ids[user_rows]),
        pl.Series("n_sessions", sessions[user_rows].astype(np.int64)),
    ).select(
        [c for c in data.user_features.columns if c in {"user_id", "n_sessions", *agg.columns}]
    )
