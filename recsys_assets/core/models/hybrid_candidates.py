"""Candidate lists for the Hybrid: the union of several sources, with each source's score and rank.

A source answers a batch of queries (users) with a few items each, as flat ``(row, col,
score)`` triples; :func:`merge_sources` takes the union per query and lines up every source's
score and rank on it (NaN / absent where a source did not propose the item). Everything is
keyed by ``row * n_items + col`` and merged with sorts and ``searchsorted``: no loop over users.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class SourceList:
    """One source's proposals for a batch: flat (row, col, score) triples, any order."""

    rows: np.ndarray
    cols: np.ndarray
    scores: np.ndarray


@dataclass
class Candidates:
    """The union of the sources' items per query row, sorted by (row, col).

    ``score[:, s]`` is source s's score (NaN where it did not propose the item) and
    ``rank[:, s]`` its 1-based rank in that source's list (NaN where absent).
    """

    rows: np.ndarray
    cols: np.ndarray
    score: np.ndarray
    rank: np.ndarray

    @property
    def size(self) -> int:
        return int(self.rows.size)

    def take(self, keep: np.ndarray) -> Candidates:
        return Candidates(self.rows[keep], self.cols[keep], self.score[keep], self.rank[keep])


def rank_in_rows(rows: np.ndarray, cols: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """0-based rank of each triple within its row: score descending, then column ascending."""
    order = np.lexsort((cols, -scores, rows))
    sorted_rows = rows[order]
    rank_sorted = np.arange(rows.size) - np.searchsorted(sorted_rows, sorted_rows, side="left")
    rank = np.empty(rows.size, dtype=np.int64)
    rank[order] = rank_sorted
    return rank


def from_matrix(cols: np.ndarray, scores: np.ndarray) -> SourceList:
    """A (n_queries, width) top-k answer (col -1 = empty slot) as flat triples."""
    rows = np.repeat(np.arange(cols.shape[0], dtype=np.int64), cols.shape[1])
    flat_cols, flat_scores = cols.ravel(), scores.ravel()
    ok = flat_cols >= 0
    return SourceList(rows[ok], flat_cols[ok].astype(np.int64), flat_scores[ok].astype(np.float32))


def merge_sources(sources: list[SourceList], n_items: int) -> Candidates:
    """Union of the sources' (row, col) pairs with per-source score and rank columns."""
    keys = [s.rows.astype(np.int64) * n_items + s.cols.astype(np.int64) for s in sources]
    union = np.unique(np.concatenate(keys)) if keys else np.empty(0, np.int64)
    score = np.full((union.size, len(sources)), np.nan, dtype=np.float32)
    rank = np.full((union.size, len(sources)), np.nan, dtype=np.float32)
    for j, (src, key) in enumerate(zip(sources, keys, strict=True)):
        pos = np.searchsorted(union, key)
        score[pos, j] = src.scores
        rank[pos, j] = rank_in_rows(src.rows, src.cols, src.scores) + 1
    return Candidates(union // n_items, union % n_items, score, rank)


def drop_seen(src: SourceList, seen: sp.csr_matrix) -> SourceList:
    """Remove triples whose (row, col) is stored in ``seen`` (rows aligned with the queries)."""
    if seen.nnz == 0 or src.rows.size == 0:
        return src
    n = seen.shape[1]
    seen_rows = np.repeat(np.arange(seen.shape[0], dtype=np.int64), np.diff(seen.indptr))
    keep = ~np.isin(src.rows * n + src.cols, seen_rows * n + seen.indices, kind="sort")
    return SourceList(src.rows[keep], src.cols[keep], src.scores[keep])


def top_per_row(src: SourceList, n: int) -> SourceList:
    """Each row's ``n`` best triples (score descending, column ascending)."""
    keep = rank_in_rows(src.rows, src.cols, src.scores) < n
    return SourceList(src.rows[keep], src.cols[keep], src.scores[keep])


def global_list(
    n_queries: int, order: np.ndarray, item_score: np.ndarray, n: int, seen: sp.csr_matrix | None
) -> SourceList:
    """The same ranked item list for every query, less each query's seen items, cut at ``n``.

    Only the first ``n + most seen in the batch`` items of ``order`` can be needed.
    """
    extra = int(np.diff(seen.indptr).max()) if seen is not None and n_queries else 0
    head = order[: n + extra].astype(np.int64)
    rows = np.repeat(np.arange(n_queries, dtype=np.int64), head.size)
    cols = np.tile(head, n_queries)
    src = SourceList(rows, cols, np.tile(item_score[head].astype(np.float32), n_queries))
    if seen is not None:
        src = drop_seen(src, seen)
    return top_per_row(src, n)


def category_popular(
    user_cat_rows: np.ndarray,
    user_cat_cols: np.ndarray,
    user_cat_share: np.ndarray,
    n_categories_per_user: int,
    cat_items: np.ndarray,
    cat_item_share: np.ndarray,
    n: int,
    seen: sp.csr_matrix | None,
) -> SourceList:
    """Popular items of each query's favourite categories.

    ``user_cat_*`` are (query row, category, share of the user's events) triples; the top
    ``n_categories_per_user`` categories by share are expanded to ``cat_items[c]`` (a padded
    (n_categories, m) table of each category's most popular items, -1 = none) and scored
    ``share × cat_item_share`` (the item's popularity relative to its category's top item).
    """
    pick = rank_in_rows(user_cat_rows, user_cat_cols, user_cat_share) < n_categories_per_user
    r, c, share = user_cat_rows[pick], user_cat_cols[pick], user_cat_share[pick]
    width = cat_items.shape[1]
    rows = np.repeat(r, width)
    cols = cat_items[c].ravel().astype(np.int64)
    scores = np.repeat(share, width) * cat_item_share[c].ravel()
    ok = cols >= 0
    src = SourceList(rows[ok], cols[ok], scores[ok].astype(np.float32))
    if seen is not None:
        src = drop_seen(src, seen)
    return top_per_row(src, n)
