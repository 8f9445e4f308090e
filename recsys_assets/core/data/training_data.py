"""Everything a recommender may learn from, built once from the ``splits`` table.

``build_training_data`` turns the cleaned interactions of the chosen splits into index-based
arrays (a weighted user×item CSR matrix, item features, user features, ordered sessions and the
raw time-sorted event arrays). Every model reads the same :class:`TrainingData`, so the id maps
and the "already seen" matrix are identical across models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys_assets.core.data.schemas import SPLIT_NAMES

MS_PER_DAY = 86_400_000
N_PRICE_BUCKETS = 5
N_ROOT_SHARES = 5  # user_features carries the share of events in the most popular root categories

_SPLITS_REQUIRED = ("user_id", "item_id", "event", "timestamp", "weight", "session_id", "split")
_CATALOG_REQUIRED = ("item_id", "category_id", "price", "available")
_TREE_REQUIRED = ("category_id", "ancestors")


@dataclass
class TrainingData:
    """Index-based training inputs shared by all recommenders.

    Rows of ``user_item`` follow ``user_ids`` and columns follow ``item_ids`` (both sorted, so
    id → index is a ``searchsorted``). Session and event arrays hold those row/column indices.
    """

    user_item: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_category: np.ndarray
    item_ancestors: sp.csr_matrix
    category_ids: np.ndarray
    item_price: np.ndarray
    item_price_bucket: np.ndarray
    item_available: np.ndarray
    user_features: pl.DataFrame
    session_indptr: np.ndarray
    session_items: np.ndarray
    session_users: np.ndarray
    event_user: np.ndarray
    event_item: np.ndarray
    event_weight: np.ndarray
    event_time: np.ndarray
    reference_ms: int

    @property
    def n_users(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_ids.shape[0])

    def user_index(self, user_ids: np.ndarray) -> np.ndarray:
        """Row index of each external user id, -1 for ids not in the training data."""
        return lookup_index(self.user_ids, user_ids)

    def item_index(self, item_ids: np.ndarray) -> np.ndarray:
        """Column index of each external item id, -1 for ids not in the training data."""
        return lookup_index(self.item_ids, item_ids)


def lookup_index(sorted_ids: np.ndarray, ids: np.ndarray | Sequence[int]) -> np.ndarray:
    """Vectorised position of ``ids`` in the sorted array ``sorted_ids``; -1 where absent."""
    ids = np.asarray(ids, dtype=np.int64).ravel()
    if sorted_ids.size == 0:
        return np.full(ids.shape, -1, dtype=np.int64)
    pos = np.searchsorted(sorted_ids, ids)
    pos_clipped = np.minimum(pos, sorted_ids.size - 1)
    found = sorted_ids[pos_clipped] == ids
    return np.where(found, pos_clipped, -1).astype(np.int64)


def build_training_data(
    splits: pl.DataFrame,
    catalog: pl.DataFrame,
    tree_table: pl.DataFrame,
    use_splits: Sequence[str] = ("train",),
    half_life_days: float | None = None,
) -> TrainingData:
    """Build :class:`TrainingData` from the interactions of ``use_splits``.

    ``half_life_days`` time-decays the weights of ``user_item`` towards ``reference_ms`` (the last
    training timestamp); the raw ``event_weight`` array is never decayed, so models that decay
    themselves (ContentBased) start from the undecayed weights.
    """
    _check_columns(splits, "splits", _SPLITS_REQUIRED)
    _check_columns(catalog, "catalog", _CATALOG_REQUIRED)
    _check_columns(tree_table, "tree_table", _TREE_REQUIRED)
    unknown = sorted(set(use_splits) - set(SPLIT_NAMES))
    if unknown or not use_splits:
        raise ValueError(f"use_splits: unknown split(s) {unknown}; valid names: {SPLIT_NAMES}")
    if half_life_days is not None and not half_life_days > 0:
        raise ValueError(f"half_life_days must be > 0 or None, got {half_life_days}")

    events = splits.filter(pl.col("split").is_in(list(use_splits)))
    if events.height == 0:
        raise ValueError(f"splits: no interactions in split(s) {list(use_splits)}")
    _check_not_null(events, "splits", ("user_id", "item_id", "timestamp", "weight", "session_id"))
    events = events.select(
        pl.col("user_id").cast(pl.Int64),
        pl.col("item_id").cast(pl.Int64),
        pl.col("event").cast(pl.Utf8),
        pl.col("timestamp").cast(pl.Int64),
        pl.col("weight").cast(pl.Float32),
        pl.col("session_id").cast(pl.Int64),
    )
    weights = events["weight"].to_numpy()
    bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
    if bad.size:
        raise ValueError(
            f"splits: row {int(bad[0])} (of the used splits): column weight must be a finite "
            f"number >= 0, got {weights[bad[0]]}"
        )
    catalog = _clean_catalog(catalog)

    user_ids = np.unique(events["user_id"].to_numpy())
    item_ids = np.union1d(events["item_id"].to_numpy(), catalog["item_id"].to_numpy())
    reference_ms = int(events["timestamp"].max())

    # time order (ties broken by user, item, then input order) so event arrays and sessions
    # are deterministic
    events = events.sort(["timestamp", "user_id", "item_id"], maintain_order=True)
    ev_user = lookup_index(user_ids, events["user_id"].to_numpy()).astype(np.int32)
    ev_item = lookup_index(item_ids, events["item_id"].to_numpy()).astype(np.int32)
    ev_time = events["timestamp"].to_numpy().astype(np.int64)
    ev_weight = events["weight"].to_numpy().astype(np.float32)

    matrix_weight = ev_weight
    if half_life_days is not None:
        age_days = (reference_ms - ev_time) / MS_PER_DAY
        matrix_weight = (ev_weight * np.exp2(-age_days / half_life_days)).astype(np.float32)
    user_item = sp.csr_matrix(
        (matrix_weight, (ev_user, ev_item)),
        shape=(user_ids.size, item_ids.size),
        dtype=np.float32,
    )
    user_item.sum_duplicates()
    user_item.sort_indices()

    category_ids, cat_ancestors = _category_ancestors(tree_table, catalog)
    item_cat_id = _item_column(catalog, item_ids, "category_id")
    item_category = np.full(item_ids.size, -1, dtype=np.int32)
    known = ~np.isnan(item_cat_id)
    item_category[known] = lookup_index(category_ids, item_cat_id[known].astype(np.int64))
    item_ancestors = _item_ancestors(item_category, cat_ancestors)

    item_price = _item_column(catalog, item_ids, "price").astype(np.float32)
    available = _item_column(catalog, item_ids, "available")
    item_available = np.where(np.isnan(available), -1, available).astype(np.int8)

    session_indptr, session_items, session_users = _ordered_sessions(
        events["session_id"].to_numpy(), ev_item, ev_user
    )
    user_features = _user_features(events, item_ids, item_category, category_ids, cat_ancestors)

    return TrainingData(
        user_item=user_item,
        user_ids=user_ids.astype(np.int64),
        item_ids=item_ids.astype(np.int64),
        item_category=item_category,
        item_ancestors=item_ancestors,
        category_ids=category_ids,
        item_price=item_price,
        item_price_bucket=price_buckets(item_price),
        item_available=item_available,
        user_features=user_features,
        session_indptr=session_indptr,
        session_items=session_items,
        session_users=session_users,
        event_user=ev_user,
        event_item=ev_item,
        event_weight=ev_weight,
        event_time=ev_time,
        reference_ms=reference_ms,
    )


def training_data_to_bytes(
    data: TrainingData,
    meta: dict | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> bytes:
    """``data`` as one npz archive of plain arrays (no pickle), as the model store keeps models.

    Built once per graph run by the ``training_data`` asset and loaded by every model asset,
    instead of each rebuilding it from ``splits`` (seconds each at scale 1.0). ``meta``
    (JSON-able) travels with it, e.g. how the users were sampled; ``extra`` arrays too (e.g.
    the tuning users' validation targets).
    """
    from recsys_assets.core.models.serialization import csr_to_arrays, pack

    arrays: dict[str, np.ndarray] = {
        **csr_to_arrays("user_item", data.user_item),
        **csr_to_arrays("item_ancestors", data.item_ancestors),
    }
    for name in _ARRAY_FIELDS:
        arrays[name] = getattr(data, name)
    for name, values in (extra or {}).items():
        arrays[f"extra_{name}"] = np.asarray(values)
    features = data.user_features
    for i, column in enumerate(features.columns):
        arrays[f"user_features_{i}"] = features[column].to_numpy()
    return pack(
        arrays,
        {
            **(meta or {}),
            "kind": "training_data",
            "reference_ms": int(data.reference_ms),
            "user_feature_columns": features.columns,
        },
    )


def training_data_from_bytes(
    payload: bytes,
) -> tuple[TrainingData, dict, dict[str, np.ndarray]]:
    """Inverse of :func:`training_data_to_bytes`: the data, its ``meta`` and ``extra``."""
    from recsys_assets.core.models.serialization import csr_from_arrays, unpack

    arrays, meta = unpack(payload)
    if meta.get("kind") != "training_data":
        raise ValueError(f"training data bytes: archive holds {meta.get('kind')!r}")
    features = pl.DataFrame(
        {c: arrays[f"user_features_{i}"] for i, c in enumerate(meta["user_feature_columns"])}
    )
    data = TrainingData(
        user_item=csr_from_arrays("user_item", arrays),
        item_ancestors=csr_from_arrays("item_ancestors", arrays),
        user_features=features,
        reference_ms=int(meta["reference_ms"]),
        **{name: arrays[name] for name in _ARRAY_FIELDS},
    )
    extra = {k.removeprefix("extra_"): v for k, v in arrays.items() if k.startswith("extra_")}
    return data, meta, extra


_ARRAY_FIELDS = (
    "user_ids",
    "item_ids",
    "item_category",
    "category_ids",
    "item_price",
    "item_price_bucket",
    "item_available",
    "session_indptr",
    "session_items",
    "session_users",
    "event_user",
    "event_item",
    "event_weight",
    "event_time",
)


def sample_users(
    splits: pl.DataFrame,
    use_splits: Sequence[str],
    fraction: float,
    min_users: int,
    seed: int = 0,
    always: pl.Series | None = None,
    max_users: int | None = None,
) -> pl.Series:
    """A seeded sample of the users with events in ``use_splits`` (sorted ``user_id``).

    ``fraction`` of them, but never fewer than ``min_users`` (all of them when there are
    fewer): tuning on a quarter of the users ranks parameters as the whole does at a quarter of
    the cost, while a small data set keeps every user. Users in ``always`` (those tuning scores:
    the ones with validation targets) are all kept and count towards the size; the rest are
    drawn at random. Scoring only a quarter of them made the tuned choice noise: at scale 0.05
    NCF's "best" trial beat its defaults on 752 sampled valid users and lost to them on test.
    ``max_users`` caps the sample (never below the ``always`` users): at scale 1.0 a quarter is
    ~250k users, and every tuning fit on them cost minutes.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    users = (
        splits.filter(pl.col("split").is_in(list(use_splits)))["user_id"]
        .cast(pl.Int64)
        .unique()
        .sort()
    )
    n = max(int(round(fraction * users.len())), min_users)
    if max_users is not None:
        n = min(n, max_users)
    if n >= users.len():
        return users
    if always is None or not always.len():
        return users.sample(n, seed=seed).sort()
    kept = users.filter(users.is_in(always.cast(pl.Int64).implode()))
    rest = users.filter(~users.is_in(kept.implode()))
    extra = max(n - kept.len(), 0)
    drawn = rest.sample(min(extra, rest.len()), seed=seed)
    return pl.concat([kept, drawn]).sort()


def relevant_items(splits: pl.DataFrame, split: str, data: TrainingData) -> pl.DataFrame:
    """Distinct (user_id, item_id) pairs of ``split`` for users with training history.

    Items unseen in training are kept: a model cannot recommend them, and that is a real miss.
    """
    _check_columns(splits, "splits", ("user_id", "item_id", "split"))
    if split not in SPLIT_NAMES:
        raise ValueError(f"split: unknown split {split!r}; valid names: {SPLIT_NAMES}")
    return (
        splits.lazy()
        .filter(pl.col("split") == split)
        .filter(pl.col("user_id").is_in(pl.Series(data.user_ids)))
        .select(pl.col("user_id").cast(pl.Int64), pl.col("item_id").cast(pl.Int64))
        .unique()
        .sort(["user_id", "item_id"])
        .collect()
    )


def price_buckets(price: np.ndarray) -> np.ndarray:
    """Quantile bucket 0..4 of each known price (equal-count buckets), -1 where unknown."""
    bucket = np.full(price.shape, -1, dtype=np.int8)
    known = np.isfinite(price)
    if known.any():
        edges = np.quantile(price[known], np.linspace(0, 1, N_PRICE_BUCKETS + 1)[1:-1])
        bucket[known] = np.searchsorted(edges, price[known], side="right").astype(np.int8)
    return bucket


# --- helpers ------------------------------------------------------------------------------------


def _check_columns(df: pl.DataFrame, frame: str, required: Sequence[str]) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{frame}: missing column(s) {missing}; has {df.columns}")


def _check_not_null(df: pl.DataFrame, frame: str, columns: Sequence[str]) -> None:
    for col in columns:
        if df[col].null_count():
            row = int(df[col].is_null().arg_true()[0])
            raise ValueError(f"{frame}: row {row} (of the used splits): column {col} is null")


def _clean_catalog(catalog: pl.DataFrame) -> pl.DataFrame:
    _check_not_null(catalog, "catalog", ("item_id",))
    dup = ~catalog["item_id"].is_first_distinct()
    if dup.any():
        row = int(dup.arg_true()[0])
        raise ValueError(
            f"catalog: row {row}: column item_id {catalog['item_id'][row]} appears more than once"
        )
    return catalog.select(
        pl.col("item_id").cast(pl.Int64),
        pl.col("category_id").cast(pl.Int64),
        pl.col("price").cast(pl.Float64),
        pl.col("available").cast(pl.Int8),
    ).sort("item_id")


def _item_column(catalog: pl.DataFrame, item_ids: np.ndarray, column: str) -> np.ndarray:
    """Catalog ``column`` aligned to ``item_ids`` as float64, NaN where unknown."""
    out = np.full(item_ids.size, np.nan)
    pos = lookup_index(item_ids, catalog["item_id"].to_numpy())
    values = catalog[column].cast(pl.Float64).fill_null(np.nan).to_numpy()
    out[pos] = values
    return out


def _category_ancestors(
    tree_table: pl.DataFrame, catalog: pl.DataFrame
) -> tuple[np.ndarray, sp.csr_matrix]:
    """Sorted category ids and a (n_cat, n_cat) 0/1 matrix: row c marks c and its ancestors.

    Categories used by the catalogue but absent from the tree count as their own roots.
    """
    tree = tree_table.select(
        pl.col("category_id").cast(pl.Int64), pl.col("ancestors").cast(pl.List(pl.Int64))
    )
    _check_not_null(tree, "tree_table", ("category_id",))
    catalog_cats = catalog["category_id"].drop_nulls().to_numpy()
    pairs = (
        tree.with_columns(
            pl.when(pl.col("ancestors").is_null() | (pl.col("ancestors").list.len() == 0))
            .then(pl.concat_list(pl.col("category_id")))
            .otherwise(pl.col("ancestors"))
            .alias("ancestors")
        )
        .explode("ancestors")
        .drop_nulls("ancestors")
    )
    child = pairs["category_id"].to_numpy()
    anc = pairs["ancestors"].to_numpy()
    category_ids = np.unique(np.concatenate([tree["category_id"].to_numpy(), anc, catalog_cats]))
    orphans = np.setdiff1d(catalog_cats, tree["category_id"].to_numpy())
    rows = np.concatenate([lookup_index(category_ids, child), lookup_index(category_ids, orphans)])
    cols = np.concatenate([lookup_index(category_ids, anc), lookup_index(category_ids, orphans)])
    # the category itself is always in its own row, whatever the tree's ancestors list holds
    diag = np.arange(category_ids.size)
    mat = sp.csr_matrix(
        (
            np.ones(rows.size + diag.size, dtype=np.float32),
            (np.concatenate([rows, diag]), np.concatenate([cols, diag])),
        ),
        shape=(category_ids.size, category_ids.size),
    )
    mat.sum_duplicates()
    mat.data[:] = 1.0
    return category_ids.astype(np.int64), mat


def _item_ancestors(item_category: np.ndarray, cat_ancestors: sp.csr_matrix) -> sp.csr_matrix:
    n_items, n_cat = item_category.size, cat_ancestors.shape[0]
    known = np.flatnonzero(item_category >= 0)
    onehot = sp.csr_matrix(
        (np.ones(known.size, dtype=np.float32), (known, item_category[known])),
        shape=(n_items, n_cat),
    )
    out = (onehot @ cat_ancestors).tocsr()
    out.data[:] = 1.0
    out.sort_indices()
    return out.astype(np.float32)


def _ordered_sessions(
    session_id: np.ndarray, ev_item: np.ndarray, ev_user: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group time-sorted events by session: a stable sort keeps time order inside a session."""
    order = np.argsort(session_id, kind="stable")
    sid = session_id[order]
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
    indptr = np.r_[starts, sid.size].astype(np.int64)
    return indptr, ev_item[order].astype(np.int32), ev_user[order][starts].astype(np.int32)


def _user_features(
    events: pl.DataFrame,
    item_ids: np.ndarray,
    item_category: np.ndarray,
    category_ids: np.ndarray,
    cat_ancestors: sp.csr_matrix,
) -> pl.DataFrame:
    """Simple per-user aggregates plus the share of events in the most popular root categories."""
    # the root is the ancestor column with the fewest ancestors of its own (depth 0)
    depth = np.diff(cat_ancestors.indptr)
    root_of_cat = np.full(category_ids.size, -1, dtype=np.int64)
    rows = np.repeat(np.arange(category_ids.size), depth)
    is_root = depth[cat_ancestors.indices] == 1
    root_of_cat[rows[is_root]] = category_ids[cat_ancestors.indices[is_root]]
    item_root = np.where(item_category >= 0, root_of_cat[np.maximum(item_category, 0)], -1)

    ev_root = item_root[lookup_index(item_ids, events["item_id"].to_numpy())]
    frame = events.with_columns(
        pl.Series("root_id", ev_root, dtype=pl.Int64),
        (pl.col("timestamp") // MS_PER_DAY).alias("day"),
    )
    top_roots = (
        frame.filter(pl.col("root_id") >= 0)
        .group_by("root_id")
        .len()
        .sort(["len", "root_id"], descending=[True, False])
        .head(N_ROOT_SHARES)["root_id"]
        .to_list()
    )
    shares = [
        ((pl.col("root_id") == r).sum() / pl.len()).cast(pl.Float32).alias(f"root_share_{r}")
        for r in top_roots
    ]
    return (
        frame.group_by("user_id")
        .agg(
            pl.len().cast(pl.Int64).alias("n_events"),
            pl.col("item_id").n_unique().cast(pl.Int64).alias("n_items"),
            pl.col("session_id").n_unique().cast(pl.Int64).alias("n_sessions"),
            pl.col("day").n_unique().cast(pl.Int64).alias("days_active"),
            (pl.col("event") == "addtocart").sum().cast(pl.Int64).alias("n_addtocart"),
            (pl.col("event") == "transaction").sum().cast(pl.Int64).alias("n_transactions"),
            pl.col("weight").sum().cast(pl.Float32).alias("total_weight"),
            pl.col("timestamp").min().alias("first_ms"),
            pl.col("timestamp").max().alias("last_ms"),
            *shares,
        )
        .sort("user_id")
    )
