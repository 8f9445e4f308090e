"""User, item and user×item features for the Hybrid's re-ranker, as of a TrainingData's end.

:func:`build_context` summarises one :class:`TrainingData` (everything measured at its
``reference_ms``, the last event it holds, so the label-period phase never sees its labels):

* items — all-time and windowed popularity (1, 7, 30 days), the trend (last 7 days against
  the 7 before), a decayed "hot" score, distinct users, age and days since the last event, the
  share of add-to-cart/transaction weight, price, price bucket, availability, popularity
  within the category;
* users — RFM-like recency / frequency / monetary (days since the last event, active days,
  summed event weight, add-to-carts and transactions) and an RFM score (quintiles summed),
  tenure, events, items, sessions, events in the last 7 days, the mean price bucket seen;
* user × category — event count and days since the last event in each leaf category, and
  the event count per root category, as sorted (user, category) keys for vectorised lookup.

:func:`candidate_features` turns candidates (user row, item column, per-source score and
rank) into one float32 matrix; NaN marks "unknown" (the trees route it like sklearn does).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import polars as pl

from recsys_assets.core.data.schemas import DEFAULT_EVENT_WEIGHTS
from recsys_assets.core.data.training_data import MS_PER_DAY, TrainingData
from recsys_assets.core.models.hybrid_candidates import Candidates

ITEM_FEATURES = (
    "item_pop_all",
    "item_pop_1d",
    "item_pop_7d",
    "item_pop_30d",
    "item_trend_7d",
    "item_hot",
    "item_users",
    "item_age_days",
    "item_idle_days",
    "item_buy_share",
    "item_price_log",
    "item_price_bucket",
    "item_available",
    "item_cat_pop_share",
)
USER_FEATURES = (
    "user_recency_days",
    "user_tenure_days",
    "user_events",
    "user_items",
    "user_days_active",
    "user_sessions",
    "user_monetary",
    "user_carts",
    "user_transactions",
    "user_events_7d",
    "user_rfm_score",
    "user_price_mean",
)
PAIR_FEATURES = (
    "cat_share",
    "root_share",
    "cat_recency_days",
    "same_cat_as_last",
    "price_gap",
    "n_sources",
)


def feature_names(source_names: list[str]) -> list[str]:
    per_source = [f"{s}_{kind}" for s in source_names for kind in ("score", "rank", "gap")]
    return [*ITEM_FEATURES, *USER_FEATURES, *PAIR_FEATURES, *per_source]


@dataclass
class FeatureContext:
    """What the features and the own candidate sources need, all plain arrays (serialisable)."""

    item_stats: np.ndarray  # (n_items, len(ITEM_FEATURES)) float32
    user_stats: np.ndarray  # (n_users, len(USER_FEATURES)) float32
    item_leaf: np.ndarray  # (n_items,) leaf category column, -1 unknown
    item_root: np.ndarray  # (n_items,) root category column, -1 unknown
    user_last_leaf: np.ndarray  # (n_users,) leaf category of the last event, -1 none
    leaf_keys: np.ndarray  # sorted user * n_cat + leaf category of (user, leaf) pairs
    leaf_count: np.ndarray  # events of the pair
    leaf_idle_days: np.ndarray  # days since the pair's last event
    root_keys: np.ndarray  # sorted user * n_cat + root category
    root_count: np.ndarray
    item_hot: np.ndarray  # (n_items,) decayed recent popularity (the trending source's score)
    hot_order: np.ndarray  # item columns by item_hot descending (top slice only)
    cat_items: np.ndarray  # (n_cat, m) most popular recent items per leaf category, -1 pad
    cat_item_share: np.ndarray  # (n_cat, m) their popularity / the category's top item's
    n_categories: int

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}_{f.name}": getattr(self, f.name) for f in fields(self)}
        out[f"{prefix}_n_categories"] = np.asarray(self.n_categories, dtype=np.int64)
        return out

    @classmethod
    def from_arrays(cls, prefix: str, arrays: dict[str, np.ndarray]) -> FeatureContext:
        values = {f.name: arrays[f"{prefix}_{f.name}"] for f in fields(cls)}
        values["n_categories"] = int(values["n_categories"])
        return cls(**values)

    def user_category_rows(self, user_rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """(query row, leaf category, share of the user's events) for each query's leaf pairs."""
        n_cat = self.n_categories
        lo = np.searchsorted(self.leaf_keys, user_rows.astype(np.int64) * n_cat)
        hi = np.searchsorted(self.leaf_keys, (user_rows.astype(np.int64) + 1) * n_cat)
        counts = hi - lo
        q = np.repeat(np.arange(user_rows.size, dtype=np.int64), counts)
        pos = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(q.size)
        cats = self.leaf_keys[pos] % n_cat
        events = self.user_stats[user_rows, USER_FEATURES.index("user_events")]
        share = self.leaf_count[pos] / np.expm1(events[q])
        return q, cats, share.astype(np.float32)


HALF_LIFE_GRID_DAYS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


def decayed_popularity(data: TrainingData, half_life_days: float) -> np.ndarray:
    """Summed event weight per item, halved every ``half_life_days`` before ``reference_ms``."""
    age = (data.reference_ms - data.event_time) / MS_PER_DAY
    weights = data.event_weight.astype(np.float64) * np.exp2(-age / half_life_days)
    return np.bincount(data.event_item, weights=weights, minlength=data.n_items)


def choose_half_life(data: TrainingData, label_item_counts: np.ndarray, n: int) -> float:
    """The popularity half-life whose top-``n`` list best predicts the label period.

    Where demand moves fast (new items, short-lived hits) a short half-life wins; where
    popularity is stable a long one does. Each grid value ranks the items by decayed
    popularity; its top ``n`` are scored by the label users who touched them, discounted by
    rank as in DCG. Ties go to the longer half-life (the steadier list).
    """
    discount = 1.0 / np.log2(np.arange(2, n + 2))
    best, best_gain = HALF_LIFE_GRID_DAYS[-1], -1.0
    for half_life in reversed(HALF_LIFE_GRID_DAYS):  # nine vectorised passes over the events
        hot = decayed_popularity(data, half_life)
        top = np.argsort(-hot, kind="stable")[:n]
        gain = float((label_item_counts[top] * discount[: top.size]).sum())
        if gain > best_gain:
            best, best_gain = half_life, gain
    return best


def _log1p(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.asarray(x, dtype=np.float64)).astype(np.float32)


def build_context(
    data: TrainingData,
    hot_half_life_days: float,
    cat_items_per_category: int,
    hot_list_size: int,
) -> FeatureContext:
    """Summarise ``data`` as of its ``reference_ms`` (see the module docstring)."""
    ref = data.reference_ms
    n_items = data.n_items
    ev_item, ev_user = data.event_item.astype(np.int64), data.event_user.astype(np.int64)
    w = data.event_weight.astype(np.float64)
    age = (ref - data.event_time) / MS_PER_DAY

    def pop(mask: np.ndarray | None = None) -> np.ndarray:
        if mask is None:
            return np.bincount(ev_item, weights=w, minlength=n_items)
        return np.bincount(ev_item[mask], weights=w[mask], minlength=n_items)

    pop_all, pop_30 = pop(), pop(age < 30)
    pop_7, pop_prev7 = pop(age < 7), pop((age >= 7) & (age < 14))
    hot = decayed_popularity(data, hot_half_life_days)
    # time-sorted events: the first/last occurrence of an item is its first/last event
    first = np.full(n_items, np.nan)
    last = np.full(n_items, np.nan)
    items_seen, first_idx = np.unique(ev_item, return_index=True)
    first[items_seen] = age[first_idx]
    _, last_rev = np.unique(ev_item[::-1], return_index=True)
    last[items_seen] = age[ev_item.size - 1 - last_rev]
    buy = pop(w > DEFAULT_EVENT_WEIGHTS["view"])
    binary = data.user_item.tocsc()
    item_users = np.diff(binary.indptr)
    leaf = data.item_category.astype(np.int64)
    n_cat = int(data.item_ancestors.shape[1])
    cat_top = np.zeros(n_cat + 1)
    np.maximum.at(cat_top, leaf + 1, pop_30)
    cat_share = np.divide(
        pop_30, cat_top[leaf + 1], out=np.zeros(n_items), where=cat_top[leaf + 1] > 0
    )
    price = data.item_price.astype(np.float64)
    item_stats = np.column_stack(
        [
            _log1p(pop_all),
            _log1p(pop(age < 1)),
            _log1p(pop_7),
            _log1p(pop_30),
            _log1p(pop_7) - _log1p(pop_prev7),
            _log1p(hot),
            _log1p(item_users),
            first,
            last,
            np.divide(buy, pop_all, out=np.full(n_items, np.nan), where=pop_all > 0),
            np.where(np.isfinite(price), np.log1p(np.maximum(price, 0)), np.nan),
            np.where(data.item_price_bucket >= 0, data.item_price_bucket, np.nan),
            np.where(data.item_available >= 0, data.item_available, np.nan),
            np.where(leaf >= 0, cat_share, np.nan),
        ]
    ).astype(np.float32)

    root = _item_roots(data)
    user_stats, last_leaf = _user_stats(data, ev_user, ev_item, w, age, leaf)
    leaf_keys, leaf_count, leaf_idle = _pair_table(ev_user, leaf[ev_item], age, n_cat)
    root_keys, root_count, _ = _pair_table(ev_user, root[ev_item], age, n_cat)

    hot_order = np.argsort(-hot, kind="stable")[:hot_list_size].astype(np.int64)
    cat_items, cat_item_share = _category_tops(leaf, hot, n_cat, cat_items_per_category)
    return FeatureContext(
        item_stats=item_stats,
        user_stats=user_stats,
        item_leaf=leaf.astype(np.int32),
        item_root=root.astype(np.int32),
        user_last_leaf=last_leaf.astype(np.int32),
        leaf_keys=leaf_keys,
        leaf_count=leaf_count,
        leaf_idle_days=leaf_idle,
        root_keys=root_keys,
        root_count=root_count,
        item_hot=hot.astype(np.float32),
        hot_order=hot_order,
        cat_items=cat_items,
        cat_item_share=cat_item_share,
        n_categories=n_cat,
    )


def _item_roots(data: TrainingData) -> np.ndarray:
    """Each item's top-level category: the ancestor on its path that covers the most items."""
    anc = data.item_ancestors.tocsr()
    if anc.nnz == 0:
        return np.full(data.n_items, -1, dtype=np.int64)
    covered = np.bincount(anc.indices, minlength=anc.shape[1])
    rows = np.repeat(np.arange(anc.shape[0]), np.diff(anc.indptr))
    # the root's subtree contains every other category of the path, so it covers the most
    order = np.lexsort((covered[anc.indices], rows))
    last_of_row = np.r_[rows[order][1:] != rows[order][:-1], True]
    root = np.full(data.n_items, -1, dtype=np.int64)
    root[rows[order][last_of_row]] = anc.indices[order][last_of_row]
    root[data.item_category < 0] = -1
    return root


def _pair_table(users: np.ndarray, cats: np.ndarray, age: np.ndarray, n_cat: int):
    """Sorted (user, category) keys with their event count and days since the last event."""
    ok = cats >= 0
    frame = pl.DataFrame({"key": users[ok] * n_cat + cats[ok], "age": age[ok]})
    agg = frame.group_by("key").agg(pl.len().alias("n"), pl.col("age").min()).sort("key")
    return (
        agg["key"].to_numpy().astype(np.int64),
        agg["n"].to_numpy().astype(np.float32),
        agg["age"].to_numpy().astype(np.float32),
    )


def _user_stats(data, ev_user, ev_item, w, age, leaf):
    n_users = data.n_users
    n_events = np.bincount(ev_user, minlength=n_users).astype(np.float64)
    has = n_events > 0
    # events are time-sorted, so a user's first/last occurrence is their first/last event
    users_seen, first_idx = np.unique(ev_user, return_index=True)
    _, last_rev = np.unique(ev_user[::-1], return_index=True)
    last_idx = ev_user.size - 1 - last_rev
    recency, tenure = np.full(n_users, np.nan), np.full(n_users, np.nan)
    recency[users_seen], tenure[users_seen] = age[last_idx], age[first_idx]
    last_leaf = np.full(n_users, -1, dtype=np.int64)
    last_leaf[users_seen] = leaf[ev_item[last_idx]]

    day = data.event_time // MS_PER_DAY
    distinct_days = np.unique(ev_user * (day.max() + 1) + day) // (day.max() + 1)
    days_active = np.bincount(distinct_days, minlength=n_users).astype(np.float64)
    distinct_items = np.unique(ev_user * data.n_items + ev_item) // data.n_items
    n_items = np.bincount(distinct_items, minlength=n_users)
    sessions = np.bincount(data.session_users, minlength=n_users)
    monetary = np.bincount(ev_user, weights=w, minlength=n_users)
    carts = np.bincount(ev_user, weights=w == DEFAULT_EVENT_WEIGHTS["addtocart"], minlength=n_users)
    buys = np.bincount(
        ev_user, weights=w == DEFAULT_EVENT_WEIGHTS["transaction"], minlength=n_users
    )
    recent = np.bincount(ev_user, weights=age < 7, minlength=n_users)
    bucket = data.item_price_bucket[ev_item].astype(np.float64)
    priced = bucket >= 0
    bucket_sum = np.bincount(ev_user[priced], weights=bucket[priced], minlength=n_users)
    bucket_n = np.bincount(ev_user[priced], minlength=n_users)
    price_mean = np.divide(bucket_sum, bucket_n, out=np.full(n_users, np.nan), where=bucket_n > 0)
    # RFM score: recency, frequency (active days) and monetary each in quintiles 1..5, summed
    rfm = np.full(n_users, np.nan)
    if has.any():
        rfm[has] = _quintile(-recency[has]) + _quintile(days_active[has]) + _quintile(monetary[has])
    stats = np.column_stack(
        [
            recency,
            tenure,
            np.where(has, np.log1p(n_events), np.nan),
            np.where(has, np.log1p(n_items), np.nan),
            np.where(has, days_active, np.nan),
            np.where(has, sessions, np.nan),
            np.where(has, np.log1p(monetary), np.nan),
            np.where(has, carts, np.nan),
            np.where(has, buys, np.nan),
            np.where(has, recent, np.nan),
            rfm,
            price_mean,
        ]
    ).astype(np.float32)
    return stats, last_leaf


def _quintile(values: np.ndarray) -> np.ndarray:
    """1..5 by rank (ties share the lowest rank's quintile), higher value → higher score."""
    order = np.sort(values)
    rank = np.searchsorted(order, values, side="left")
    return 1 + (5 * rank) // values.size


def _category_tops(leaf: np.ndarray, hot: np.ndarray, n_cat: int, m: int):
    """(n_cat, m) most popular recent items per leaf category and their share of the top one."""
    known = np.flatnonzero((leaf >= 0) & (hot > 0))
    order = known[np.lexsort((known, -hot[known], leaf[known]))]
    cats = leaf[order]
    pos = np.arange(order.size) - np.searchsorted(cats, cats, side="left")
    keep = pos < m
    items = np.full((n_cat, m), -1, dtype=np.int32)
    share = np.zeros((n_cat, m), dtype=np.float32)
    items[cats[keep], pos[keep]] = order[keep]
    top = np.zeros(n_cat)
    top[cats[keep & (pos == 0)]] = hot[order[keep & (pos == 0)]]
    share[cats[keep], pos[keep]] = hot[order[keep]] / top[cats[keep]]
    return items, share


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values at ``query`` keys (sorted ``keys``), NaN where absent."""
    out = np.full(query.size, np.nan, dtype=np.float32)
    if keys.size == 0:
        return out
    pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)
    hit = keys[pos] == query
    out[hit] = values[pos[hit]]
    return out


def candidate_features(ctx: FeatureContext, user_rows: np.ndarray, cand: Candidates) -> np.ndarray:
    """(n_candidates, n_features) float32 in the order of :func:`feature_names`.

    ``user_rows`` maps each query row of ``cand`` to its user row in the context.
    """
    users = user_rows[cand.rows].astype(np.int64)
    items = cand.cols.astype(np.int64)
    item_part = ctx.item_stats[items]
    user_part = ctx.user_stats[users]
    n_cat = ctx.n_categories
    leaf, root = ctx.item_leaf[items].astype(np.int64), ctx.item_root[items].astype(np.int64)
    n_events = np.expm1(user_part[:, USER_FEATURES.index("user_events")])
    leaf_n = np.where(
        leaf >= 0, _lookup(ctx.leaf_keys, ctx.leaf_count, users * n_cat + leaf), np.nan
    )
    root_n = np.where(
        root >= 0, _lookup(ctx.root_keys, ctx.root_count, users * n_cat + root), np.nan
    )
    leaf_idle = np.where(
        leaf >= 0, _lookup(ctx.leaf_keys, ctx.leaf_idle_days, users * n_cat + leaf), np.nan
    )
    price_gap = (
        item_part[:, ITEM_FEATURES.index("item_price_bucket")]
        - user_part[:, USER_FEATURES.index("user_price_mean")]
    )
    pair_part = np.column_stack(
        [
            np.nan_to_num(leaf_n, nan=0.0) / n_events,
            np.nan_to_num(root_n, nan=0.0) / n_events,
            leaf_idle,
            ((leaf >= 0) & (leaf == ctx.user_last_leaf[users])).astype(np.float32),
            price_gap,
            (~np.isnan(cand.rank)).sum(axis=1),
        ]
    ).astype(np.float32)
    # a source's score gap to its own best score for the same query: comparable across users
    best = _row_max(cand.rows, cand.score)
    gap = best[cand.rows] - cand.score
    per_source = np.stack([cand.score, cand.rank, gap], axis=2).reshape(cand.size, -1)
    return np.concatenate([item_part, user_part, pair_part, per_source], axis=1).astype(
        np.float32, copy=False
    )


def _row_max(rows: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Per query row and source, the highest score (NaN where the source proposed nothing).

    ``rows`` is sorted (candidates come grouped by query), so one ``fmax.reduceat`` does it.
    """
    n_rows = int(rows.max()) + 1 if rows.size else 0
    best = np.full((n_rows, score.shape[1]), np.nan, dtype=np.float32)
    if rows.size:
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        best[rows[starts]] = np.fmax.reduceat(score, starts, axis=0)
    return best
