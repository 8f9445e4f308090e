"""NCF (NeuMF): negatives, validation hold-out, fast scoring, accuracy, bytes and seeds."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from test_models import planted_frames

from recsys_assets.core.data.training_data import build_training_data
from recsys_assets.core.evaluation.holdout import evaluate, holdout_targets
from recsys_assets.core.models import create_model
from recsys_assets.core.models.ncf import (
    NCFRecommender,
    holdout_last,
    is_seen,
    sample_negatives,
    seen_keys,
)

FAST = {
    "n_epochs": 8,
    "batch_size": 1024,
    "learning_rate": 0.005,
    "val_users": 200,
    "num_threads": 1,
}


@pytest.fixture(scope="module")
def frames():
    return planted_frames()


@pytest.fixture(scope="module")
def data(frames):
    return build_training_data(*frames)


@pytest.fixture(scope="module")
def model(data):
    return NCFRecommender(**FAST).fit(data)


def test_negatives_are_unseen_and_cover_the_catalogue():
    rng = np.random.default_rng(0)
    dense = rng.random((50, 40)) < 0.6  # users who saw most of the catalogue
    dense[:, 0] = False  # ...but always one unseen item
    m = sp.csr_matrix(dense.astype(np.float32))
    keys = seen_keys(m)
    users = np.repeat(np.arange(50), 200)
    items = sample_negatives(keys, users, 40, rng, max_rounds=200)
    assert not dense[users, items].any()
    assert not is_seen(keys, users, items, 40).any()
    # every unseen (user, item) pair is drawn: uniform over the unseen items
    drawn = sp.csr_matrix((np.ones(users.size), (users, items)), shape=(50, 40)).toarray() > 0
    assert (drawn == ~dense).mean() > 0.95


def test_holdout_removes_each_chosen_users_latest_item(data):
    rng = np.random.default_rng(1)
    matrix, users, items = holdout_last(data, 100, rng)
    assert users.size == 100
    for u, i in zip(users, items, strict=True):  # 100 users of a test
        user_events = np.flatnonzero(data.event_user == u)
        assert data.event_item[user_events[-1]] == i
        assert i not in matrix[u].indices and i in data.user_item[u].indices
    assert matrix.nnz == data.user_item.nnz - 100


def test_fast_scoring_equals_the_network_on_every_pair(model, data):
    users = torch.arange(7)
    fast = model.net.score_all(users, model.net.item_parts())
    with torch.no_grad():
        pairs = model.net(
            users.repeat_interleave(data.n_items), torch.arange(data.n_items).repeat(7)
        )
    torch.testing.assert_close(fast, pairs.reshape(7, data.n_items), atol=1e-5, rtol=1e-5)


def test_ncf_beats_popularity_per_user(frames, data, model):
    targets = holdout_targets(frames[0], history_splits=("train",), target_split="test")
    ncf = evaluate(model, "ncf", targets, data.n_items)[1]
    pop = evaluate(create_model("popular").fit(data), "popular", targets, data.n_items)[1]
    assert ncf["ndcg_at_10"] > 1.3 * pop["ndcg_at_10"], (ncf, pop)
    assert model.history.best_epoch is not None
    assert model.history.best_metric > 0


def test_bpr_loss_trains_too(data):
    m = NCFRecommender(**{**FAST, "loss": "bpr", "n_epochs": 2}).fit(data)
    losses = [e.loss for e in m.history.epochs]
    assert np.isfinite(losses).all()


def test_round_trip_bytes(model, data):
    loaded = NCFRecommender.from_bytes(model.to_bytes())
    users = np.r_[data.user_ids[:100], [-3]]
    a, b = model.recommend(users, k=20), loaded.recommend(users, k=20)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.fallback, b.fallback)
    items = data.item_ids[:10]
    np.testing.assert_array_equal(
        model.similar_items(items, k=5).item_ids, loaded.similar_items(items, k=5).item_ids
    )


def test_deterministic_under_a_seed(data):
    quick = {**FAST, "n_epochs": 1}
    a = NCFRecommender(**quick).fit(data).to_bytes()
    b = NCFRecommender(**quick).fit(data).to_bytes()
    c = NCFRecommender(**{**quick, "seed": 3}).fit(data)
    la, lb = NCFRecommender.from_bytes(a), NCFRecommender.from_bytes(b)
    for (k, va), vb in zip(la.net.state_dict().items(), lb.net.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)
    assert not torch.equal(la.net.gmf_item, c.net.gmf_item)


def test_search_space_and_bad_params():
    optuna = pytest.importorskip("optuna")
    trial = optuna.trial.FixedTrial(
        {
            "mlp_width": 64,
            "mlp_depth": 3,
            "factors": 16,
            "loss": "bpr",
            "n_negatives": 3,
            "batch_size": 4096,
            "learning_rate": 0.001,
        }
    )
    params = NCFRecommender.search_space(trial)
    assert params["mlp_layers"] == [64, 32, 16]
    NCFRecommender(**params)
    with pytest.raises(ValueError, match="mlp_layers"):
        NCFRecommender(mlp_layers=[])
    with pytest.raises(ValueError, match="loss"):
        NCFRecommender(loss="hinge")


def test_two_stage_top_k_against_exact_scoring(model, data):
    """Candidates from the linearised model, then exact NeuMF: compared with exact scoring of
    the whole catalogue (score_candidates 0) on the same fitted network."""
    users = data.user_ids[: min(400, data.n_users)]
    model.params["score_candidates"] = 0
    try:
        exact = model.recommend(users, k=20)
        n_cand = max(20, data.n_items // 8)
        model.params["score_candidates"] = n_cand
        two = model.recommend(users, k=20)
        model.params["score_candidates"] = data.n_items  # every item a candidate: exact again
        everything = model.recommend(users, k=20)
    finally:
        model.params["score_candidates"] = FAST.get("score_candidates", 1000)
    np.testing.assert_array_equal(everything.item_ids, exact.item_ids)
    overlap = np.mean(
        [len(set(a) & set(b)) / 20 for a, b in zip(two.item_ids, exact.item_ids, strict=True)]
    )
    print(f"two-stage ({n_cand} of {data.n_items} items) top-20 overlap with exact: {overlap:.3f}")
    assert overlap >= 0.9, overlap
    # the second stage's scores are the network's exact scores of those items, in order
    rows = data.user_index(users[:50])
    dense = model._score(rows)
    cols = data.item_index(two.item_ids[:50].ravel()).reshape(50, 20)
    np.testing.assert_allclose(
        two.scores[:50], np.take_along_axis(dense, cols, axis=1), rtol=1e-5, atol=1e-5
    )
    assert (np.diff(two.scores, axis=1) <= 0).all()


def test_one_layer_mlp_scores_and_recommends(data):
    """mlp_layers of one size (no hidden layer, search-space depth 1): the MLP tower is then a
    product form, scored without pairs; it must equal the network on every pair."""
    m = NCFRecommender(**{**FAST, "n_epochs": 1, "mlp_layers": [16]}).fit(data)
    users = torch.arange(5)
    fast = m.net.score_all(users, m.net.item_parts())
    with torch.no_grad():
        pairs = m.net(users.repeat_interleave(data.n_items), torch.arange(data.n_items).repeat(5))
    torch.testing.assert_close(fast, pairs.reshape(5, data.n_items), atol=1e-5, rtol=1e-5)
    assert (m.recommend(data.user_ids[:5], k=10).item_ids >= 0).all()


def test_stage_one_ranks_items_with_positives_and_may_be_low_rank(model, data):
    """Stage one skips items nobody interacted with (only ever negatives) and may run in fewer
    dimensions; stage two still gives the network's exact scores, in order."""
    users = data.user_ids[:200]
    rows = data.user_index(users)
    seen, n_cand = model._seen, max(20, data.n_items // 8)
    try:
        model.params["score_candidates"] = n_cand
        # pretend the first 30 items had no positive (their entries gone from "seen")
        dropped = seen.copy()
        dropped.data[dropped.indices < 30] = 0
        dropped.eliminate_zeros()
        model._seen, model._linear = dropped, None
        recs = model.recommend(users, k=20)
        ranked = recs.item_ids[~recs.fallback]  # (users left without history get popularity)
        assert ranked.shape[0] > 150 and (ranked >= 0).all()
        assert not (data.item_index(ranked.ravel()) < 30).any()
        model._seen, model._linear = seen, None
        model.params["score_candidates"] = 0
        exact = model.recommend(users, k=20)
        model.params.update(score_candidates=n_cand, stage_one_rank=8)
        low = model.recommend(users, k=20)
    finally:
        model._seen, model._linear = seen, None
        model.params.update(score_candidates=1000, stage_one_rank=0)
    overlap = np.mean(
        [len(set(a) & set(b)) / 20 for a, b in zip(low.item_ids, exact.item_ids, strict=True)]
    )
    assert overlap >= 0.9, overlap
    dense = model._score(rows)
    cols = data.item_index(low.item_ids.ravel()).reshape(users.size, 20)
    np.testing.assert_allclose(
        low.scores, np.take_along_axis(dense, cols, axis=1), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="stage_one_rank"):
        NCFRecommender(stage_one_rank=-1)
    # validation during fit ranks two-stage as well (before the model counts as fitted)
    m = NCFRecommender(**{**FAST, "n_epochs": 2, "score_candidates": n_cand}).fit(data)
    assert m.history.best_metric is not None and len(m.history.epochs) == 2


def test_fast_selection_and_similar_items_keep_the_lists(model, data, monkeypatch):
    """The numba selection (stage one's candidates, the final top-k) returns the lists of the
    torch.topk path; similar_items (one cached unit matrix, one reused score block) those of
    a full stable sort of the cosine over the whole catalogue."""
    from recsys_assets.core.models import topk

    users = data.user_ids[:300]
    fast = model.recommend(users, k=50, batch_size=128)
    monkeypatch.setattr(topk, "ENABLED", False)
    slow = model.recommend(users, k=50, batch_size=128)
    np.testing.assert_array_equal(fast.item_ids, slow.item_ids)
    np.testing.assert_array_equal(fast.scores, slow.scores)
    monkeypatch.setattr(topk, "ENABLED", True)

    items = data.item_ids[::3]
    got = model.similar_items(items, k=15)
    w = torch.cat([model.net.gmf_item, model.net.mlp_item], 1).numpy()
    unit = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
    cols = data.item_index(items)
    cos = unit[cols] @ unit.T
    cos[np.arange(cols.size), cols] = -np.inf
    want = np.argsort(-cos, axis=1, kind="stable")[:, :15]
    np.testing.assert_array_equal(got.item_ids, data.item_ids[want])
    np.testing.assert_allclose(got.scores, np.take_along_axis(cos, want, 1), rtol=1e-6)
