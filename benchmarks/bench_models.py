"""Fit/recommend timings of the recommenders at RetailRocket scale, against ``implicit`` direct.

    python benchmarks/bench_models.py --scale 1.0 [--repeats 3] [--users 100000]

Synthetic interactions with the scale-1.0 shape (≈1.4M users × 235k items, ≈2.2M distinct
user-item pairs, heavy-tailed users and items, a 1,669-category tree) are generated directly
with numpy, turned into TrainingData by the real builder, and each step is timed ``--repeats``
times; the table shows medians. The "direct" rows call implicit on the very same matrix, so
the wrapper/direct ratio isolates our overhead (1.0 = none, > 1 = the wrapper is faster).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import polars as pl

from recsys_assets.core.data.schemas import (
    CATEGORY_TREE_TABLE_SCHEMA,
    ITEM_CATALOG_SCHEMA,
    SPLITS_SCHEMA,
)
from recsys_assets.core.data.training_data import TrainingData, build_training_data
from recsys_assets.core.models import create_model

DAY = 86_400_000
N_USERS, N_ITEMS, N_CATEGORIES = 1_407_580, 235_061, 1_669


def synthetic_frames(scale: float, seed: int = 0) -> tuple[pl.DataFrame, ...]:
    """(splits, catalog, tree_table) with RetailRocket's scale-1.0 shape; all "train"."""
    rng = np.random.default_rng(seed)
    n_users = max(100, int(N_USERS * scale))
    n_items = max(100, int(N_ITEMS * scale))
    n_cat = max(20, int(N_CATEGORIES * min(1.0, scale**0.5)))

    # category tree: ~25 roots, each later category hangs under a random earlier one
    n_roots = max(2, n_cat // 65)
    parent = np.full(n_cat, -1)
    parent[n_roots:] = (rng.random(n_cat - n_roots) * np.arange(n_roots, n_cat)).astype(int)
    depth = np.zeros(n_cat, dtype=np.int32)
    for c in range(n_roots, n_cat):  # runs once over ~1.7k categories, not over events
        depth[c] = depth[parent[c]] + 1
    ancestors, root = [], np.zeros(n_cat, dtype=np.int64)
    for c in range(n_cat):
        path = [c]
        while parent[path[-1]] >= 0:
            path.append(parent[path[-1]])
        ancestors.append(path)
        root[c] = path[-1]
    tree = pl.DataFrame(
        {
            "category_id": np.arange(n_cat),
            "parent_id": [int(p) if p >= 0 else None for p in parent],
            "depth": depth,
            "root_id": root,
            "ancestors": ancestors,
        },
        schema=CATEGORY_TREE_TABLE_SCHEMA,
    )

    # users: 1 + Zipf(2.5) events (mean ≈ 2, a few bots with thousands)
    deg = np.minimum(rng.zipf(2.5, n_users), 5000)
    user = np.repeat(np.arange(n_users), deg)
    n_events = user.size
    # items: heavy-tailed popularity over a random id order
    p = 1.0 / (np.arange(n_items) + 20.0) ** 0.95
    item = rng.permutation(n_items)[rng.choice(n_items, n_events, p=p / p.sum())]
    ts = rng.integers(0, 138 * DAY, n_events)
    order = np.lexsort((ts, user))
    user, item, ts = user[order], item[order], ts[order]
    # 40 % of follow-up events revisit the user's previous item (view → cart → buy, re-views):
    # about 0.8 distinct user-item pairs per event, as in RetailRocket
    again = np.r_[False, (user[1:] == user[:-1]) & (rng.random(n_events - 1) < 0.4)]
    last_new = np.maximum.accumulate(np.where(~again, np.arange(n_events), 0))
    item = item[last_new]
    new_session = np.r_[True, (user[1:] != user[:-1]) | (rng.random(n_events - 1) < 0.3)]
    event = rng.choice(
        np.array(["view", "addtocart", "transaction"]), n_events, p=[0.967, 0.025, 0.008]
    )
    weight = np.select([event == "view", event == "addtocart"], [1.0, 3.0], 5.0)
    splits = pl.DataFrame(
        {
            "user_id": user,
            "item_id": item,
            "event": event,
            "timestamp": ts,
            "transaction_id": None,
            "weight": weight,
            "session_id": np.cumsum(new_session) - 1,
            "split": "train",
        }
    ).cast(SPLITS_SCHEMA)

    item_cat = rng.choice(n_cat, n_items, p=rng.dirichlet(np.full(n_cat, 0.5)))
    catalog = pl.DataFrame(
        {
            "item_id": np.arange(n_items),
            "category_id": item_cat,
            "root_category_id": root[item_cat],
            "price": rng.lognormal(4, 1.2, n_items),
            "available": rng.integers(0, 2, n_items),
            "as_of": 138 * DAY,
        }
    ).cast(ITEM_CATALOG_SCHEMA)
    return splits, catalog, tree


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def implicit_als_direct(
    data: TrainingData, factors: int, iterations: int, reg: float, alpha: float
):
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors,
            iterations=iterations,
            regularization=reg,
            alpha=alpha,
            dtype=np.float32,
            random_state=42,
        )
        model.fit(data.user_item, show_progress=False)
    return model


def implicit_cosine_direct(data: TrainingData, k: int):
    import warnings

    from implicit.nearest_neighbours import CosineRecommender

    model = CosineRecommender(K=k + 1)  # implicit counts the item itself among its K
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # implicit warns that it converts its own COO to CSR
        model.fit(data.user_item, show_progress=False)
    return model


def scipy_cosine_neighbours(user_item, k: int, block: int = 20_000):
    """The alternative to implicit's all_pairs_knn: blocked sparse X.T @ X + per-row top-k.

    Kept here only to re-measure the choice made in item_knn.py (``--compare-scipy-knn``).
    """
    import scipy.sparse as sp

    n_items = user_item.shape[1]
    norms = np.sqrt(
        np.bincount(user_item.indices, weights=user_item.data.astype(float) ** 2, minlength=n_items)
    )
    norms[norms == 0] = 1.0
    unit = sp.csr_matrix(
        (user_item.data / norms[user_item.indices], user_item.indices, user_item.indptr),
        shape=user_item.shape,
    )
    item_users = unit.T.tocsr()
    parts = []
    for start in range(0, n_items, block):  # a loop over ~12 item blocks, not over items
        prod = (item_users[start : start + block] @ unit).tocoo()
        keep = prod.row + start != prod.col
        r, c, v = prod.row[keep], prod.col[keep], prod.data[keep]
        order = np.lexsort((c, -v, r))
        r, c, v = r[order], c[order], v[order]
        top = np.arange(r.size) - np.searchsorted(r, r) < k
        parts.append(
            sp.csr_matrix((v[top], (r[top], c[top])), shape=(min(block, n_items - start), n_items))
        )
    return sp.vstack(parts).tocsr()


def _same_neighbour_values(a, b) -> float:
    """Share of rows whose sorted neighbour cosines agree (ids may differ among equal cosines)."""

    def sorted_rows(m):
        m = m.tocsr()
        row = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
        order = np.lexsort((-m.data, row))
        return np.diff(m.indptr), m.data[order].astype(np.float64)

    (la, va), (lb, vb) = sorted_rows(a), sorted_rows(b)
    same_len = la == lb
    row = np.repeat(np.flatnonzero(same_len), la[same_len])
    differs = ~np.isclose(va[np.repeat(same_len, la)], vb[np.repeat(same_len, lb)], rtol=1e-5)
    bad = ~same_len
    bad[row[differs]] = True
    return float(1 - bad.mean())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--users", type=int, default=100_000, help="users to recommend top-20 for")
    ap.add_argument("--models", default="popular,als,item_knn,content_based")
    ap.add_argument(
        "--compare-scipy-knn",
        action="store_true",
        help="also time the scipy.sparse kNN alternative once (slow: minutes)",
    )
    args = ap.parse_args(argv)
    models = args.models.split(",")
    rows: list[tuple[str, float, str]] = []

    t = time.perf_counter()
    splits, catalog, tree = synthetic_frames(args.scale)
    print(f"generated {splits.height:,} events in {time.perf_counter() - t:.1f}s", flush=True)
    sec, data = timed(lambda f=(splits, catalog, tree): build_training_data(*f), args.repeats)
    m = data.user_item
    print(
        f"matrix {m.shape[0]:,} users × {m.shape[1]:,} items, nnz {m.nnz:,}; "
        f"max user nnz {np.diff(m.indptr).max():,}",
        flush=True,
    )
    rows.append(("build_training_data", sec, ""))

    rng = np.random.default_rng(1)
    users = data.user_ids[rng.choice(data.n_users, min(args.users, data.n_users), replace=False)]
    # warm-up: the first implicit call pays for thread pools and lazy imports; keep that out of
    # whichever of wrapper/direct happens to run first
    small = replace(data, user_item=data.user_item[:2000], user_ids=data.user_ids[:2000])
    create_model("als", {"iterations": 1}).fit(small)
    implicit_als_direct(small, 64, 1, 0.05, 2.0)
    for name in models:
        sec, model = timed(lambda name=name: create_model(name).fit(data), args.repeats)
        note, n_before = "", len(rows)
        if name == "als":
            p = model.params
            direct, _ = timed(
                lambda p=p: implicit_als_direct(
                    data, p["factors"], p["iterations"], p["regularization"], p["alpha"]
                ),
                args.repeats,
            )
            rows.append(("  implicit ALS direct fit", direct, ""))
            note = f"direct/wrapper {direct / sec:.2f}"
        if name == "item_knn":
            # implicit's CosineRecommender is plain cosine: compare it with the wrapper set to
            # plain cosine (the default is the asymmetric cosine P(j|i); same kernel, same cost)
            plain_params = {"asymmetry": 0.5, "weighting": "none", "normalize": False}
            plain_sec, plain = timed(
                lambda p=plain_params: create_model("item_knn", p).fit(data), args.repeats
            )
            rows.append(("  wrapper with plain cosine fit", plain_sec, ""))
            direct, _ = timed(
                lambda k=model.params["k"]: implicit_cosine_direct(data, k), args.repeats
            )
            rows.append(("  implicit CosineRecommender direct fit", direct, ""))
            note = f"direct/plain-cosine wrapper {direct / plain_sec:.2f}"
            if args.compare_scipy_knn:
                own, sim = timed(
                    lambda k=model.params["k"]: scipy_cosine_neighbours(data.user_item, k), 1
                )
                same = _same_neighbour_values(plain.similarity, sim)
                rows.append(
                    (
                        "  scipy.sparse kNN alternative (1 run)",
                        own,
                        f"same neighbour cosines in {same:.1%} of items",
                    )
                )
        rows[n_before:n_before] = [(f"{name} fit", sec, note)]
        print(rows[n_before], flush=True)
        sec, _ = timed(lambda model=model: model.recommend(users, k=20), args.repeats)
        rows.append(
            (f"{name} recommend top-20 × {users.size:,}", sec, f"{users.size / sec:,.0f} users/s")
        )
        print(rows[-1], flush=True)
        if name == "als":
            from threadpoolctl import threadpool_limits

            direct_model = implicit_als_direct(data, 64, 1, 0.05, 2.0)
            direct_model.user_factors, direct_model.item_factors = (
                model.user_factors,
                model.item_factors,
            )
            rows_idx = data.user_index(users)

            def direct_rec(dm=direct_model, r=rows_idx):
                with threadpool_limits(1, "blas"):
                    return dm.recommend(r, data.user_item[r], N=20)

            direct, _ = timed(direct_rec, args.repeats)
            rows.append(
                ("  implicit ALS direct recommend", direct, f"direct/wrapper {direct / sec:.2f}")
            )
            print(rows[-1], flush=True)

    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"\nscale {args.scale}: {data.n_users:,} users × {data.n_items:,} items, "
        f"nnz {data.user_item.nnz:,}; median of {args.repeats}"
    )
    print(f"{'step':<46}{'seconds':>10}  note")
    for step, sec, note in rows:
        print(f"{step:<46}{sec:>10.2f}  {note}")
    print(f"peak RSS {peak_gib:.2f} GiB")


if __name__ == "__main__":
    sys.exit(main())
