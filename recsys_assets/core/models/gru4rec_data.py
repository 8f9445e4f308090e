"""Session arrays for GRU4Rec from :class:`TrainingData`: training sessions and user histories.

Both are built vectorised from ``session_indptr``/``session_items``: consecutive repeats of an
item are collapsed (re-viewing a page is not a next item, as in the GRU4Rec papers), and
sessions are ordered by their start time, the order the original feeds them in.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from recsys_assets.core.data.training_data import TrainingData


def collapse_repeats(indptr: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop each event whose item equals the previous event's item in the same session."""
    n_sessions = indptr.size - 1
    starts = np.zeros(items.size, dtype=bool)
    starts[indptr[:-1][np.diff(indptr) > 0]] = True
    keep = starts.copy()
    keep[1:] |= items[1:] != items[:-1]
    session_of = np.repeat(np.arange(n_sessions), np.diff(indptr))
    counts = np.bincount(session_of[keep], minlength=n_sessions)
    return np.r_[0, np.cumsum(counts)].astype(np.int64), items[keep].astype(np.int64)


def session_start_times(data: TrainingData) -> np.ndarray | None:
    """Start time of each session of ``data``, or None when it cannot be recovered.

    ``TrainingData`` groups events by session id and keeps no per-session time. Session ids are
    numbered per user in time order (interactions.py), so the sessions in id order are each
    user's events in time order: the time-sorted event arrays, stably sorted by user, line up
    with ``session_items`` event for event. That is checked, and None returned if it fails.
    """
    order = np.argsort(data.event_user, kind="stable")
    if not np.array_equal(data.event_item[order], data.session_items):
        return None
    times = data.event_time[order]
    starts = data.session_indptr[:-1]
    return times[np.minimum(starts, max(times.size - 1, 0))]


def training_sessions(data: TrainingData) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, items): the collapsed sessions of length >= 2, packed in start-time order
    (ties, and all sessions when times cannot be recovered: by session index)."""
    indptr, items = collapse_repeats(data.session_indptr, data.session_items)
    lengths = np.diff(indptr)
    kept = np.flatnonzero(lengths >= 2)
    start_time = session_start_times(data)
    if start_time is None:
        by_time = kept
    else:
        by_time = kept[np.argsort(start_time[kept], kind="stable")]
    # re-pack the kept sessions contiguously in start-time order
    new_lengths = lengths[by_time]
    offsets = np.r_[0, np.cumsum(new_lengths)].astype(np.int64)
    src = np.repeat(indptr[by_time] - offsets[:-1], new_lengths) + np.arange(offsets[-1])
    return offsets, items[src]


def user_histories(
    data: TrainingData, n_sessions: int, max_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """(indptr over users, items): each user's last ``n_sessions`` sessions, collapsed,
    concatenated in time order and cut to their last ``max_items`` items."""
    indptr, items = collapse_repeats(data.session_indptr, data.session_items)
    lengths = np.diff(indptr)
    start_time = session_start_times(data)
    n = lengths.size
    key_time = start_time if start_time is not None else np.arange(n)
    order = np.lexsort((np.arange(n), key_time, data.session_users))
    users = data.session_users[order]
    # rank of each session counted from the user's most recent one
    last_of_user = np.r_[users[1:] != users[:-1], True]
    end_pos = np.flatnonzero(last_of_user)
    user_end = np.repeat(end_pos, np.diff(np.r_[-1, end_pos]))
    from_end = user_end - np.arange(n)
    chosen = order[(from_end < n_sessions) & (lengths[order] > 0)]
    ch_len = lengths[chosen]
    src = np.repeat(indptr[chosen], ch_len) + (
        np.arange(ch_len.sum()) - np.repeat(np.cumsum(ch_len) - ch_len, ch_len)
    )
    flat_items = items[src]
    flat_users = np.repeat(data.session_users[chosen], ch_len)
    # keep the last max_items per user (sessions are grouped by user in time order)
    per_user = np.bincount(flat_users, minlength=data.n_users)
    user_start = np.r_[0, np.cumsum(per_user)][flat_users]
    pos_from_end = user_start + per_user[flat_users] - 1 - np.arange(flat_items.size)
    keep = pos_from_end < max_items
    counts = np.bincount(flat_users[keep], minlength=data.n_users)
    return np.r_[0, np.cumsum(counts)].astype(np.int64), flat_items[keep].astype(np.int64)


def session_parallel_batches(
    offsets: np.ndarray, items: np.ndarray, batch_size: int
) -> Iterator[tuple]:
    """The original's session-parallel mini-batches, step by step.

    Sessions (in the given order) occupy ``batch_size`` slots; each step yields
    ``("step", inputs, targets)`` with the current and next item of every live slot. When the
    shortest live session has run out, ``("reset", finished, valid)`` says which slots finished
    (their hidden state is reset to zero and a fresh session takes the slot) and which slots
    still hold a session (the batch shrinks at the very end when no sessions are left).
    """
    n_sessions = offsets.size - 1
    if n_sessions == 0:
        return
    slots = np.arange(min(batch_size, n_sessions))
    next_session = slots.size
    start = offsets[slots].copy()
    end = offsets[slots + 1].copy()
    while True:
        minlen = int((end - start).min())
        for i in range(minlen - 1):
            yield "step", items[start + i], items[start + i + 1]
        start = start + minlen - 1
        finished = end - start <= 1
        n_finished = int(finished.sum())
        new_ids = next_session + np.arange(n_finished)
        next_session += n_finished
        slot_session = slots.copy()
        slot_session[finished] = new_ids
        valid = slot_session < n_sessions
        if not valid.any():
            return
        refill = finished & valid
        start[refill] = offsets[slot_session[refill]]
        end[refill] = offsets[slot_session[refill] + 1]
        slots, start, end = slot_session[valid], start[valid], end[valid]
        yield "reset", finished, valid
