"""Every registered recommender: the shared interface, serialisation, and beating popularity."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recsys_assets.core.data.schemas import (
    CATEGORY_TREE_TABLE_SCHEMA,
    ITEM_CATALOG_SCHEMA,
    SPLITS_SCHEMA,
)
from recsys_assets.core.data.training_data import build_training_data, relevant_items
from recsys_assets.core.models import (
    MODEL_REGISTRY,
    ItemKNNRecommender,
    Recommendations,
    Recommender,
    create_model,
    get_model_class,
    model_from_bytes,
)
from recsys_assets.core.models.topk import topk_dense

DAY = 86_400_000
MODELS = sorted(MODEL_REGISTRY)


def planted_frames(
    seed: int = 0,
    n_users: int = 500,
    n_roots: int = 3,
    leaves_per_root: int = 4,
    items_per_leaf: int = 25,
    events_per_user: int = 24,
    n_test: int = 4,
):
    """Users who like one or two leaf categories; items heavy-tailed inside each leaf.

    90 % of a user's events fall in their leaves, 10 % on globally popular items. The last
    ``n_test`` events of each user form the test split, so a model that finds the tastes wins
    over one that only knows popularity.
    """
    rng = np.random.default_rng(seed)
    n_leaves = n_roots * leaves_per_root
    n_items = n_leaves * items_per_leaf
    roots = np.arange(1, n_roots + 1)
    leaves = np.arange(100, 100 + n_leaves)
    leaf_parent = np.repeat(roots, leaves_per_root)
    tree = pl.DataFrame(
        {
            "category_id": np.r_[roots, leaves],
            "parent_id": [None] * n_roots + leaf_parent.tolist(),
            "depth": [0] * n_roots + [1] * n_leaves,
            "root_id": np.r_[roots, leaf_parent],
            "ancestors": [[int(r)] for r in roots]
            + [[int(c), int(p)] for c, p in zip(leaves, leaf_parent, strict=True)],
        },
        schema=CATEGORY_TREE_TABLE_SCHEMA,
    )
    item_ids = 1000 + np.arange(n_items) * 7  # not dense, not starting at 0
    item_leaf = np.repeat(np.arange(n_leaves), items_per_leaf)
    catalog = pl.DataFrame(
        {
            "item_id": item_ids,
            "category_id": leaves[item_leaf],
            "root_category_id": leaf_parent[item_leaf],
            "price": rng.lognormal(3, 1, n_items),
            "available": rng.integers(0, 2, n_items).astype(np.int8),
            "as_of": np.zeros(n_items, dtype=np.int64),
        },
        schema=ITEM_CATALOG_SCHEMA,
    )
    within = 1.0 / (np.arange(items_per_leaf) + 2.0)  # heavy tail inside a leaf
    within /= within.sum()
    global_pop = 1.0 / (np.arange(n_items) + 5.0)
    global_pop /= global_pop.sum()

    n_events = n_users * events_per_user
    user = np.repeat(np.arange(n_users), events_per_user)
    tastes = rng.integers(0, n_leaves, size=(n_users, 2))
    pick = tastes[user, rng.integers(0, 2, n_events) * (rng.random(n_users) < 0.5)[user]]
    leaf_item = pick * items_per_leaf + rng.choice(items_per_leaf, n_events, p=within)
    random_item = rng.choice(n_items, n_events, p=global_pop)
    item = np.where(rng.random(n_events) < 0.9, leaf_item, random_item)
    step = np.arange(n_events) % events_per_user
    ts = user * 1000 + step * (DAY // 2) + rng.integers(0, 1000, n_events)
    event = rng.choice(["view", "addtocart", "transaction"], n_events, p=[0.85, 0.1, 0.05])
    weight = np.select([event == "view", event == "addtocart"], [1.0, 3.0], 5.0)
    splits = (
        pl.DataFrame(
            {
                "user_id": 50_000 + user * 3,
                "item_id": item_ids[item],
                "event": event,
                "timestamp": ts,
                "transaction_id": np.where(event == "transaction", np.arange(n_events), -1),
                "weight": weight,
                "session_id": user * 100 + step // 4,
                "split": np.where(step >= events_per_user - n_test, "test", "train"),
            }
        )
        .with_columns(
            pl.when(pl.col("transaction_id") >= 0)
            .then(pl.col("transaction_id"))
            .alias("transaction_id")
        )
        .cast(SPLITS_SCHEMA)
    )
    return splits, catalog, tree


def ndcg_at(recommended: np.ndarray, users: np.ndarray, relevant: pl.DataFrame, k: int = 10):
    """Mean NDCG@k over users with at least one relevant item (binary relevance)."""
    rel = {u: set(g["item_id"].to_list()) for (u,), g in relevant.group_by("user_id")}
    scores = []
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for u, row in zip(users, recommended, strict=True):
        items = rel.get(int(u))
        if not items:
            continue
        hits = np.array([i in items for i in row[:k]], dtype=float)
        ideal = discounts[: min(len(items), k)].sum()
        scores.append((hits * discounts[: hits.size]).sum() / ideal)
    return float(np.mean(scores))


@pytest.fixture(scope="module")
def frames():
    return planted_frames()


@pytest.fixture(scope="module")
def data(frames):
    return build_training_data(*frames)


@pytest.fixture(scope="module")
def fitted(data):
    return {name: create_model(name).fit(data) for name in MODELS}


@pytest.fixture(scope="module")
def heldout(frames, data):
    """Test items the user has not seen in training (seen ones are excluded from answers)."""
    splits = frames[0]
    train_pairs = splits.filter(pl.col("split") == "train").select("user_id", "item_id").unique()
    return relevant_items(splits, "test", data).join(
        train_pairs, on=["user_id", "item_id"], how="anti"
    )


# --- interface ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_recommend_shapes_and_seen_excluded(name, fitted, data):
    model = fitted[name]
    users = data.user_ids[:300]
    recs = model.recommend(users, k=10)
    items, scores = recs
    assert isinstance(recs, Recommendations)
    assert items.shape == scores.shape == (300, 10)
    assert items.dtype == np.int64 and scores.dtype == np.float32 and recs.fallback.dtype == bool
    assert not recs.fallback.any()
    assert np.isin(items, data.item_ids).all()
    assert (np.diff(scores, axis=1) <= 0).all(), "scores must be sorted descending"
    assert all(len(set(r)) == r.size for r in items), "no duplicates in a list"
    rows = data.user_index(users)
    cols = data.item_index(items.ravel()).reshape(items.shape)
    seen = np.asarray(data.user_item[np.repeat(rows, 10), cols.ravel()]).ravel()
    assert (seen == 0).all(), "already-seen items must be excluded"


@pytest.mark.parametrize("name", MODELS)
def test_include_seen_and_small_batches_agree(name, fitted, data):
    model = fitted[name]
    users = data.user_ids[:50]
    full = model.recommend(users, k=15, exclude_seen=False)
    rows = data.user_index(users)
    cols = data.item_index(full.item_ids.ravel()).reshape(full.item_ids.shape)
    assert np.asarray(data.user_item[np.repeat(rows, 15), cols.ravel()]).any()
    batched = model.recommend(users, k=15, exclude_seen=False, batch_size=7)
    np.testing.assert_array_equal(full.item_ids, batched.item_ids)


@pytest.mark.parametrize("name", MODELS)
def test_unknown_user_gets_flagged_popularity(name, fitted, data):
    model = fitted[name]
    users = np.array([-5, data.user_ids[0], 123_456_789])
    recs = model.recommend(users, k=5)
    assert recs.fallback.tolist() == [True, False, True]
    top_popular = data.item_ids[np.argsort(-model._popularity, kind="stable")[:5]]
    np.testing.assert_array_equal(recs.item_ids[0], top_popular)
    np.testing.assert_array_equal(recs.item_ids[2], top_popular)


@pytest.mark.parametrize("name", MODELS)
def test_user_with_empty_history_falls_back(name, fitted, data):
    model = create_model(name)
    m = data.user_item.tolil()
    m[0, :] = 0
    emptied = sp.csr_matrix(m)
    emptied.eliminate_zeros()
    from dataclasses import replace

    model.fit(replace(data, user_item=emptied.astype(np.float32)))
    recs = model.recommend(data.user_ids[:2], k=5)
    assert recs.fallback.tolist() == [True, False]
    assert (recs.item_ids[0] >= 0).all()


@pytest.mark.parametrize("name", MODELS)
def test_k_larger_than_catalogue(name, fitted, data):
    model = fitted[name]
    recs = model.recommend(data.user_ids[:3], k=10_000)
    assert recs.item_ids.shape == (3, data.n_items)
    # seen items become empty slots at the end
    n_seen = np.diff(data.user_item.indptr)[:3]
    for row, ns in zip(recs.item_ids, n_seen, strict=True):
        assert (row[: data.n_items - ns] >= 0).all() and (row[data.n_items - ns :] == -1).all()
    assert np.isneginf(recs.scores[recs.item_ids == -1]).all()
    with pytest.raises(ValueError, match="k must be a positive integer"):
        model.recommend(data.user_ids[:3], k=0)


@pytest.mark.parametrize("name", MODELS)
def test_round_trip_bytes(name, fitted, data):
    model = fitted[name]
    blob = model.to_bytes()
    assert isinstance(blob, bytes)
    loaded = model_from_bytes(name, blob)
    assert loaded.params == model.params
    users = np.r_[data.user_ids, [-1]]
    a, b = model.recommend(users, k=20), loaded.recommend(users, k=20)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.fallback, b.fallback)
    items = data.item_ids[:20]
    np.testing.assert_array_equal(
        model.similar_items(items, k=5).item_ids, loaded.similar_items(items, k=5).item_ids
    )
    any_model = Recommender.from_bytes(blob)
    assert type(any_model) is type(model)
    other = next(n for n in MODELS if n != name)
    with pytest.raises(ValueError, match=f"hold a '{name}' model"):
        get_model_class(other).from_bytes(blob)


@pytest.mark.parametrize("name", MODELS)
def test_similar_items(name, fitted, data):
    model = fitted[name]
    items = np.r_[data.item_ids[:30], [-77]]
    recs = model.similar_items(items, k=10)
    assert recs.item_ids.shape == (31, 10)
    assert recs.fallback.tolist() == [False] * 30 + [True]
    for query, row in zip(items[:30], recs.item_ids[:30], strict=True):
        assert query not in row
    assert (recs.item_ids[:30, 0] >= 0).all()
    np.testing.assert_array_equal(
        model.similar_items(items, k=10, batch_size=4).item_ids, recs.item_ids
    )


@pytest.mark.parametrize("name", MODELS)
def test_unknown_params_rejected_and_unfitted_errors(name):
    with pytest.raises(ValueError, match="unknown parameter.*'nope'"):
        create_model(name, {"nope": 1})
    model = create_model(name)
    with pytest.raises(RuntimeError, match="not fitted"):
        model.recommend(np.array([1]))
    with pytest.raises(RuntimeError, match="not fitted"):
        model.to_bytes()


def test_registry_errors_and_params():
    with pytest.raises(ValueError, match="valid models: .*'als'"):
        get_model_class("svd")
    assert create_model("als", {"factors": 8}).params["factors"] == 8
    assert create_model("item_knn").params["k"] == 50
    with pytest.raises(ValueError, match="factors"):
        create_model("als", {"factors": 0})
    with pytest.raises(ValueError, match="not a recsys model archive"):
        model_from_bytes("als", b"garbage")


@pytest.mark.parametrize("name", MODELS)
def test_search_space(name):
    optuna = pytest.importorskip("optuna")
    # Trials drawn by a real sampler: whatever the search space suggests, the model accepts.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(8):
        params = get_model_class(name).search_space(study.ask())
        create_model(name, params)


# The Hybrid re-ranks a candidate pool with learnt trees: there is no dense score whose full sort
# its answer would be a shortcut of (its own tests compare it with its sources instead).
EXACT_FAST_PATHS = [name for name in MODELS if name != "hybrid"]


@pytest.mark.parametrize("name", EXACT_FAST_PATHS)
@pytest.mark.parametrize("width", [1, 10, 120, 300])
def test_fast_paths_equal_dense_reference(name, width, fitted, data):
    """Candidate/implicit top-k paths give exactly what the dense score + full sort gives."""
    model = fitted[name]
    rows = np.arange(data.n_users)
    for exclude in (True, False):
        fast = model._recommend_rows(rows, width, exclude)
        ref = Recommender._recommend_rows(model, rows, width, exclude)
        _assert_same_topk(name, fast, ref)
    cols = np.arange(0, data.n_items, 3)
    _assert_same_topk(
        name, model._similar_rows(cols, width), Recommender._similar_rows(model, cols, width)
    )
    # GRU4Rec answers a session by a forward pass over the ordered items, not from a session
    # matrix: test_gru4rec compares it with the numpy forward pass instead.
    if model.session_aware and name != "gru4rec":
        sessions = model.session_matrix([data.item_ids[[i, i + 5, i + 40]] for i in range(200)])
        for excl in (sessions, None):
            _assert_same_topk(
                name,
                model._session_topk(sessions, width, excl),
                Recommender._session_topk(model, sessions, width, excl),
            )


def _assert_same_topk(name, fast, ref):
    if name == "als":  # implicit's blocked sgemm rounds differently from numpy's
        np.testing.assert_allclose(fast[1], ref[1], rtol=1e-4, atol=1e-6)
        assert (fast[0] == ref[0]).mean() > 0.99
    else:
        np.testing.assert_array_equal(fast[0], ref[0])
        np.testing.assert_array_equal(fast[1], ref[1])


# --- behaviour and quality ----------------------------------------------------------------------


def test_every_model_beats_popularity(fitted, data, heldout):
    users = np.unique(heldout["user_id"].to_numpy())
    ndcg = {n: ndcg_at(fitted[n].recommend(users, k=10).item_ids, users, heldout) for n in MODELS}
    for name in MODELS:
        if name != "popular":
            assert ndcg[name] > 1.5 * ndcg["popular"], ndcg


def test_item_knn_neighbours_match_brute_force_cosine(data):
    from recsys_assets.core.models.registry import create_model

    # raw cosine on the unweighted matrix (the defaults are binary, asymmetric and normalised)
    model = create_model(
        "item_knn", {"weighting": "none", "asymmetry": 0.5, "normalize": False}
    ).fit(data)
    x = data.user_item.toarray().astype(np.float64)
    norms = np.linalg.norm(x, axis=0)
    cos = (x.T @ x) / np.outer(norms, norms)
    np.fill_diagonal(cos, -np.inf)
    sim = model.similarity
    for i in range(0, data.n_items, 17):
        got = sim[i].indices
        want = np.argsort(-cos[i], kind="stable")[: got.size]
        # equal cosines may be cut differently: compare the values, not the ids
        np.testing.assert_allclose(np.sort(cos[i, got]), np.sort(cos[i, want]), rtol=1e-5)
        assert got.size == min(50, int((cos[i] > 0).sum()))


def test_recommend_session(fitted, data):
    knn = fitted["item_knn"]
    leaf = data.item_category
    one_leaf = data.item_ids[leaf == leaf[0]][:3]
    recs = knn.recommend_session([one_leaf, np.array([-1]), np.array([], dtype=np.int64)], k=20)
    assert recs.item_ids.shape == (3, 20)
    assert recs.fallback.tolist() == [False, True, True]
    same_leaf = leaf[data.item_index(recs.item_ids[0])] == leaf[0]
    assert same_leaf[:10].mean() >= 0.8
    # most recent items weigh more: the answer follows the last item's leaf
    other = data.item_ids[leaf == leaf[-1]][:2]
    mixed = knn.recommend_session([np.r_[one_leaf, other]], k=5)
    assert (leaf[data.item_index(mixed.item_ids[0])] == leaf[-1]).sum() >= 3
    excl = knn.recommend_session([one_leaf], k=20, exclude_seen=True)
    assert not np.isin(excl.item_ids, one_leaf).any()
    # models without a session mode answer with flagged popularity
    als = fitted["als"].recommend_session([one_leaf], k=5, exclude_seen=True)
    assert als.fallback.all() and not np.isin(als.item_ids, one_leaf).any()


def test_popularity_window(data):
    recent = create_model("popular", {"window_days": 1}).fit(data)
    cutoff = data.reference_ms - DAY
    in_window = np.bincount(
        data.event_item[data.event_time >= cutoff],
        weights=data.event_weight[data.event_time >= cutoff],
        minlength=data.n_items,
    )
    top = recent.recommend(np.array([-1]), k=3).item_ids[0]
    assert data.item_index(top).tolist() == np.argsort(-in_window, kind="stable")[:3].tolist()


def test_topk_tie_break_is_lower_column_first():
    scores = np.array(
        [[1, 3, 3, 0, 3, 2], [0, 0, 0, 0, 0, 0], [5, -np.inf, -np.inf, -np.inf, -np.inf, -np.inf]],
        dtype=np.float32,
    )
    cols, vals = topk_dense(scores.copy(), 2)
    assert cols.tolist() == [[1, 2], [0, 1], [0, -1]]
    assert vals[2, 1] == -np.inf
    cols, _ = topk_dense(scores.copy(), 4)
    assert cols[0].tolist() == [1, 2, 4, 5]


def test_to_frame(fitted, data):
    recs = fitted["popular"].recommend(data.user_ids[:2], k=3)
    frame = recs.to_frame(data.user_ids[:2])
    assert frame.columns == ["user_id", "rank", "item_id", "score", "fallback"]
    assert frame["rank"].to_list() == [1, 2, 3, 1, 2, 3]


def test_item_knn_is_registered_class():
    assert MODEL_REGISTRY["item_knn"] is ItemKNNRecommender


def test_cosine_neighbours_with_identical_items():
    from recsys_assets.core.models.item_knn import cosine_neighbours

    # items 0, 1, 2 have identical users (cosine 1 ties with the item itself), item 3 half-overlaps
    m = sp.csr_matrix(np.array([[1, 1, 1, 1], [2, 2, 2, 0], [0, 0, 0, 0]], dtype=np.float32))
    sim = cosine_neighbours(m, k=1)
    for i in range(4):
        row = sim[i]
        assert row.nnz == 1 and i not in row.indices
    assert sim[0].data[0] == pytest.approx(1.0)
    assert sim[3].data[0] == pytest.approx(1 / np.sqrt(5))
    full = cosine_neighbours(m, k=5)
    assert np.diff(full.indptr).tolist() == [3, 3, 3, 3]


def test_item_knn_conditional_probability_neighbours(data):
    """Default ItemKNN: top-k of P(j | i) = co-users(i, j) / users(i), rows summing to 1."""
    model = create_model("item_knn", {"k": 7}).fit(data)
    b = (data.user_item.toarray() > 0).astype(np.float64)
    cond = (b.T @ b) / np.maximum(b.sum(axis=0), 1)[:, None]
    np.fill_diagonal(cond, -np.inf)
    sim = model.similarity
    for i in range(0, data.n_items, 13):
        row = sim[i]
        want = np.sort(cond[i])[::-1][: row.nnz]
        # the kept items are the k most probable successors (ties may be cut differently)
        np.testing.assert_allclose(np.sort(cond[i, row.indices])[::-1], want, rtol=1e-5)
        assert row.nnz == min(7, int((cond[i] > 0).sum()))
        # normalised: P(j | i) over the kept neighbours
        np.testing.assert_allclose(row.data, cond[i, row.indices] / want.sum(), rtol=1e-5)


def test_asymmetric_cosine_hand_computed():
    from recsys_assets.core.models.item_knn import cosine_neighbours, normalize_neighbour_rows

    # item 0: users {0,1,2,3}; item 1: users {0,1}; item 2: users {2}; item 3: user {3}
    m = sp.csr_matrix(
        np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1]], dtype=np.float32)
    )
    # asymmetry 1: sim(i, j) = |U_i ∩ U_j| / |U_i|
    full = cosine_neighbours(m, k=3, asymmetry=1.0).toarray()
    np.testing.assert_allclose(full[0], [0, 0.5, 0.25, 0.25])
    np.testing.assert_allclose(full[1], [1, 0, 0, 0])
    # asymmetry 0.75: |U_i ∩ U_j| / (|U_i|^0.75 |U_j|^0.25); item 0's single neighbour is item 1
    one = cosine_neighbours(m, k=1, asymmetry=0.75).toarray()
    assert one[0].nonzero()[0].tolist() == [1]
    assert one[0, 1] == pytest.approx(2 / (4**0.75 * 2**0.25))
    # asymmetry 0.5 is the plain cosine
    cos = cosine_neighbours(m, k=3).toarray()
    assert cos[0, 2] == pytest.approx(1 / np.sqrt(4))
    rows = normalize_neighbour_rows(sp.csr_matrix(full)).toarray()
    np.testing.assert_allclose(rows[0], [0, 0.5, 0.25, 0.25])
    np.testing.assert_allclose(rows.sum(axis=1), [1, 1, 1, 1])


def test_item_knn_params_validated_and_kept_through_bytes(data):
    for bad in (
        {"asymmetry": 1.5},
        {"normalize": "yes"},
        {"binary_history": 1},
        {"weighting": "log"},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            create_model("item_knn", bad)
    params = {"weighting": "tfidf", "asymmetry": 0.7, "normalize": False, "binary_history": False}
    model = create_model("item_knn", params).fit(data)
    loaded = model_from_bytes("item_knn", model.to_bytes())
    assert {k: loaded.params[k] for k in params} == params
    users = data.user_ids[:50]
    np.testing.assert_array_equal(model.recommend(users).item_ids, loaded.recommend(users).item_ids)
    # binary_history: an item seen (or weighted) many times casts one vote
    rows = np.arange(40)
    assert data.user_item[rows].data.max() > 1  # otherwise both modes would agree
    for flag in (True, False):
        knn = create_model("item_knn", {"binary_history": flag}).fit(data)
        history = data.user_item[rows].astype(np.float32)
        if flag:
            history = (history > 0).astype(np.float32)
        want = (history @ knn.similarity).toarray() + knn._tiebreak
        np.testing.assert_allclose(knn._score(rows), want, rtol=1e-5)
