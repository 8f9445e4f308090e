"""Synthetic serving bundles for the layout tests and the serving benchmark (no trained models).

Recommended items follow a Zipf-like popularity (as the lists of real recommenders do), so the
encoded sizes measured on these bundles are representative of real ones.
"""

from __future__ import annotations

import numpy as np

from recsys_serving.bundle import ModelLists, ServingBundle


def _zipf_lists(
    rng: np.random.Generator, rows: int, width: int, cdf: np.ndarray, item_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, width) distinct items per row drawn by popularity, with descending scores."""
    draws = 2 * width + 16
    cand = np.searchsorted(cdf, rng.random((rows, draws)))
    srt = np.sort(cand, axis=1)
    dup = np.zeros_like(srt, dtype=bool)
    dup[:, 1:] = srt[:, 1:] == srt[:, :-1]
    key = np.where(dup, 2.0, rng.random(srt.shape))  # duplicates sort last
    pick = np.argsort(key, axis=1)[:, :width]
    items = item_ids[np.take_along_axis(srt, pick, axis=1)]
    short = np.take_along_axis(dup, pick, axis=1)
    items[short] = -1
    # keep -1 padding at the end of each row
    order = np.argsort(short, axis=1, kind="stable")
    items = np.take_along_axis(items, order, axis=1)
    scores = np.sort(rng.random((rows, width)).astype(np.float32), axis=1)[:, ::-1]
    return items, np.ascontiguousarray(scores)


def synthetic_bundle(
    n_users: int = 1000,
    n_items: int = 500,
    models: tuple[str, ...] = ("als", "itemknn"),
    *,
    list_length: int = 100,
    similar_length: int = 20,
    similar_models: tuple[str, ...] | None = None,
    n_categories: int = 20,
    zipf: float = 1.0,
    seed: int = 0,
    chunk_rows: int = 20_000,
    unavailable_share: float = 0.0,
    top_unavailable: bool = False,
) -> ServingBundle:
    """A bundle with ``models`` over users ``0..n_users-1`` (ids spaced by 3) and ``n_items``.

    Categories ``0..n_categories-1`` are leaves under ``max(1, n_categories // 5)`` root
    categories numbered from ``n_categories``. ``unavailable_share`` of the items are published
    as unavailable (RetailRocket's lists: 40-45 %), the rest available or unknown (10 %);
    ``top_unavailable`` also makes the most popular item unavailable (what the service must
    never show by default).
    """
    rng = np.random.default_rng(seed)
    item_ids = np.sort(rng.choice(max(2 * n_items, 10), n_items, replace=False)).astype(np.int64)
    pop = (1.0 / np.arange(1, n_items + 1) ** zipf)[rng.permutation(n_items)]
    cdf = np.cumsum(pop)
    cdf /= cdf[-1]
    user_ids = np.arange(n_users, dtype=np.int64) * 3 + 1
    similar_models = models if similar_models is None else similar_models
    lists = []
    for name in models:  # a handful of models
        parts = [
            _zipf_lists(rng, min(chunk_rows, n_users - a), list_length, cdf, item_ids)
            for a in range(0, n_users, chunk_rows)
        ]
        items = np.concatenate([p[0] for p in parts])
        scores = np.concatenate([p[1] for p in parts])
        sim = {}
        if name in similar_models:
            s_items, s_scores = _zipf_lists(rng, n_items, similar_length, cdf, item_ids)
            sim = dict(similar_item_ids=item_ids, similar_items=s_items, similar_scores=s_scores)
        lists.append(
            ModelLists(
                name=name,
                version="1",
                trained_at="2015-09-18T00:00:00+00:00",
                metrics={"ndcg_at_10": float(rng.random()), "recall_at_20": float(rng.random())},
                params={"seed": seed},
                user_ids=user_ids,
                items=items,
                scores=scores,
                **sim,
            )
        )
    lengths = np.minimum(rng.geometric(0.2, n_users), 50)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    n_ev = int(indptr[-1])
    h_items = item_ids[np.searchsorted(cdf, rng.random(n_ev))]
    h_events = rng.choice(np.array([0, 1, 2], dtype=np.int8), n_ev, p=[0.9, 0.07, 0.03])
    owner = np.repeat(np.arange(n_users), lengths)
    h_ts = 1_442_000_000_000 - (np.arange(n_ev) - indptr[owner]) * 60_000 - owner
    category = rng.integers(0, n_categories, n_items).astype(np.int64)
    price = np.round(rng.lognormal(3, 1, n_items), 2)
    price[rng.random(n_items) < 0.1] = np.nan
    order = np.argsort(-pop)
    by_cat = {}
    for c in range(n_categories):  # a handful of categories
        members = item_ids[order][category[order] == c][:100]
        by_cat[c] = (members, np.linspace(1.0, 0.1, len(members)).astype(np.float32))
    share = float(unavailable_share)
    if not 0.0 <= share <= 0.9:
        raise ValueError(f"unavailable_share: want 0..0.9, got {share}")
    available = rng.choice(
        np.array([-1, 0, 1], dtype=np.int8), n_items, p=[0.1, share, 0.9 - share]
    )
    if top_unavailable:
        available[order[0]] = 0
    n_roots = max(1, n_categories // 5)
    return ServingBundle(
        models=lists,
        default_model=models[0],
        popular_items=item_ids[order][:100],
        popular_scores=np.linspace(1.0, 0.01, min(100, n_items)).astype(np.float32),
        popular_by_category=by_cat,
        history_user_ids=user_ids,
        history_indptr=indptr,
        history_items=h_items,
        history_events=h_events,
        history_timestamps=h_ts.astype(np.int64),
        item_ids=item_ids,
        item_category=category,
        item_price=price,
        item_available=available,
        ab_experiment=None,
        category_ids=np.arange(n_categories + n_roots, dtype=np.int64),
        category_parents=np.r_[n_categories + np.arange(n_categories) % n_roots,
                               np.full(n_roots, -1)].astype(np.int64),
    )  # fmt: skip
