"""GRU4Rec answers /recommend/session live: published weights, a numpy forward pass, no torch.

The path under test is the real one: a fitted GRU4Rec goes through ``build_bundle`` and
``publish_bundle`` into the test's own prefix of a real Redis, and a real app (Litestar's test
client) loads the network from there and answers requests; its answers are compared with the
torch model's own ``recommend_session``.
"""

from __future__ import annotations

import numpy as np
import pytest
from generated_frames import load_generated, next_item_protocol
from litestar.testing import TestClient

from recsys_assets.core.data.training_data import build_training_data
from recsys_assets.core.evaluation.next_item import next_item_events
from recsys_assets.core.models import create_model
from recsys_assets.core.models.gru4rec import GRU4RecRecommender
from recsys_assets.core.models.gru4rec_data import training_sessions
from recsys_assets.core.serving_bundle import BundleLimits, PublishedModel, build_bundle
from recsys_serving import redis_layout as L
from recsys_serving.app import create_app
from recsys_serving.gru_forward import next_item_scores
from recsys_serving.schemas import MAX_SESSION_ITEMS
from recsys_serving.settings import Settings

SMALL = {"layers": [48], "n_sample": 256, "batch_size": 32, "n_epochs": 2, "num_threads": 1}
SESSION = "/api/v1/recommend/session"
N_SESSIONS = 100


# --- a fitted GRU4Rec, its bundle and sessions to ask about ---------------------------------------
@pytest.fixture(scope="module")
def frames(small_raw_dir):
    return load_generated(small_raw_dir)


@pytest.fixture(scope="module")
def data(frames):
    splits, catalog, tree = frames
    return build_training_data(splits, catalog, tree, use_splits=("train", "valid"))


@pytest.fixture(scope="module")
def gru(data):
    return GRU4RecRecommender(**SMALL, sample_cache_size=20_000).fit(data)


@pytest.fixture(scope="module")
def sessions(frames, data):
    """100 next-item prefixes of the test split (at most the 50 newest items each)."""
    _, items = training_sessions(data)
    prefixes, _ = next_item_events(next_item_protocol(frames[0], data.item_ids[np.unique(items)]))
    rng = np.random.default_rng(11)
    picked = rng.choice(len(prefixes), N_SESSIONS, replace=False)
    return [np.asarray(prefixes[i][-MAX_SESSION_ITEMS:], dtype=np.int64) for i in picked]


@pytest.fixture(scope="module")
def bundle(frames, data, gru):
    splits, catalog, _ = frames
    popular = create_model("popular").fit(data)
    models = {
        "popular": PublishedModel(popular, 1, "2015-09-01", {}, {}),
        "gru4rec": PublishedModel(gru, 4, "2015-09-01", {"recall_at_20": 0.5}, {}),
    }
    limits = BundleLimits(top_n=20, max_users=300, max_similar_items=300)
    return build_bundle(models, splits, catalog, "popular", limits=limits).bundle


def _client(redis_url: str, prefix: str) -> TestClient:
    return TestClient(create_app(Settings(redis_url=redis_url, prefix=prefix)))


@pytest.fixture
def client(r, redis_url, prefix, bundle):
    # small chunks: the 48-wide network spans several strings, as a full-scale one does
    L.publish_bundle(r, bundle, prefix, weight_chunk_bytes=64 << 10)
    with _client(redis_url, prefix) as c:
        yield c


def _ask(client, items, n=20, **extra) -> dict:
    # every item, as the torch model ranks them: the generated catalogue has unavailable ones,
    # which the service leaves out by default (tests/serving/test_business_rules.py)
    extra.setdefault("rules", {"include_unavailable": True})
    resp = client.post(SESSION, json={"item_ids": [int(i) for i in items], "n_recommendations": n,
                                      **extra})  # fmt: skip
    assert resp.status_code == 200, resp.text
    return resp.json()


def _items_scores(body) -> tuple[np.ndarray, np.ndarray]:
    recs = body["recommendations"]
    return np.array([x["item_id"] for x in recs]), np.array([x["score"] for x in recs])


# --- the builder --------------------------------------------------------------------------------
def test_builder_publishes_the_network_of_a_model_that_exports_one(bundle, gru):
    net = bundle.model("gru4rec").gru
    assert net is not None and bundle.model("popular").gru is None
    np.testing.assert_array_equal(net.item_ids, gru.item_ids)
    exported = gru.export_numpy()
    assert set(net.arrays) == set(exported)
    for name, arr in exported.items():
        np.testing.assert_array_equal(net.arrays[name], arr)


# --- the answer equals torch's --------------------------------------------------------------------
@pytest.mark.parametrize("exclude_seen", [False, True])
def test_live_answer_equals_the_torch_models_top20(client, gru, sessions, exclude_seen):
    torch_recs = gru.recommend_session(sessions, k=20, exclude_seen=exclude_seen)
    assert not torch_recs.fallback.any()  # every sampled session has known items
    for r, items in enumerate(sessions):
        body = _ask(client, items, exclude_seen=exclude_seen)
        assert (body["source"], body["model"], body["model_version"]) == ("session", "gru4rec", "4")
        assert body["cold_start"] is False and body["ignored_item_ids"] == []
        got_items, got_scores = _items_scores(body)
        np.testing.assert_array_equal(got_items, torch_recs.item_ids[r], err_msg=f"session {r}")
        np.testing.assert_allclose(got_scores, torch_recs.scores[r], atol=1e-5, rtol=0)
        if exclude_seen:
            assert not np.isin(got_items, items).any()
    assert client.app.state.store.network_loads == 1  # loaded once for all 100 requests


def test_the_first_requests_of_a_version_load_the_network_once(r, redis_url, prefix, bundle):
    L.publish_bundle(r, bundle, prefix)
    with _client(redis_url, prefix) as c:
        from concurrent.futures import ThreadPoolExecutor

        first = int(bundle.model("gru4rec").gru.item_ids[0])
        with ThreadPoolExecutor(4) as pool:
            bodies = list(pool.map(lambda _: _ask(c, [first]), range(8)))
        assert all(b["model"] == "gru4rec" for b in bodies)
        assert c.app.state.store.network_loads == 1


# --- input handling ------------------------------------------------------------------------------
def test_unknown_items_are_skipped_and_reported(client, gru, sessions):
    items = sessions[0]
    unknown = [987_654_321, 987_654_322]
    body = _ask(client, [unknown[0], *items, unknown[1], unknown[0]])
    assert body["ignored_item_ids"] == unknown  # each once, in request order
    expected = gru.recommend_session([items], k=20, exclude_seen=True)
    np.testing.assert_array_equal(_items_scores(body)[0], expected.item_ids[0])


def test_a_session_of_only_unknown_items_gets_popular_flagged_cold(client, bundle):
    body = _ask(client, [987_654_321], n=5)
    assert (body["source"], body["cold_start"]) == ("popular", True)
    assert body["ignored_item_ids"] == [987_654_321]
    np.testing.assert_array_equal(_items_scores(body)[0], bundle.popular_items[:5])


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"item_ids": []}, "item_ids"),
        # 51 items: too long is a 400 (documented limit), never silently cut
        ({"item_ids": list(range(1, MAX_SESSION_ITEMS + 2))}, "item_ids"),
        ({"item_ids": [1, -1]}, "item_ids"),
        ({"item_ids": [1.5]}, "item_ids"),
        ({"item_ids": [1], "exclude_seen": "yes"}, "exclude_seen"),
        ({"item_ids": [1], "n_recommendations": 0}, "n_recommendations"),
    ],
)
def test_bad_sessions_are_400_naming_the_field(client, payload, field):
    resp = client.post(SESSION, json=payload)
    assert resp.status_code == 400, resp.text
    assert resp.json()["extra"][0]["key"] == field


def test_fifty_items_n_beyond_the_catalogue_and_repeats_answer(client, sessions, gru):
    items = np.resize(sessions[1], MAX_SESSION_ITEMS)  # repeats the session to 50 items
    body = _ask(client, items, n=100)
    got, scores = _items_scores(body)
    assert len(got) == 100 and np.all(np.diff(scores) <= 1e-6)
    expected = gru.recommend_session([items], k=100, exclude_seen=True)
    np.testing.assert_array_equal(got, expected.item_ids[0])


def test_a_named_model_without_a_network_is_not_answered_live(client, sessions):
    # popular's neighbour lists are empty (it has no notion of neighbours): today's answer for
    # it, the popular list, not the network's
    body = _ask(client, sessions[0], n=5, model="popular")
    assert (body["model"], body["source"], body["cold_start"]) == ("popular", "popular", True)
    assert client.app.state.store.network_loads == 0


# --- layout: keys, versions, rollback, refresh ----------------------------------------------------
def _weight_keys(r, prefix: str, version: str) -> list[bytes]:
    return list(r.scan_iter(match=f"{prefix}:v:{version}:weights:*", count=1000))


def test_weights_live_under_the_version_and_go_with_it(r, prefix, bundle):
    first = L.publish_bundle(r, bundle, prefix, weight_chunk_bytes=64 << 10)
    meta = L.decode_meta(r.get(L.Keys(prefix).meta(first.version)))
    spec = next(m for m in meta["models"] if m["name"] == "gru4rec")["gru"]
    n_chunks = sum(a["chunks"] for a in spec["arrays"].values())
    assert n_chunks > len(spec["arrays"])  # the output layer spans several chunks
    assert len(_weight_keys(r, prefix, first.version)) == n_chunks
    assert first.weight_bytes["gru4rec"] == L.weights_nbytes(spec)
    assert all(len(r.get(k)) <= 64 << 10 for k in _weight_keys(r, prefix, first.version))
    second = L.publish_bundle(r, bundle, prefix)
    third = L.publish_bundle(r, bundle, prefix)
    assert first.version in third.deleted_versions
    assert _weight_keys(r, prefix, first.version) == []  # cleanup took the network too
    assert len(_weight_keys(r, prefix, second.version)) > 0


def _perturbed(bundle, scale: float):
    """The same bundle with the gru4rec network's output layer scaled (another network)."""
    from dataclasses import replace

    m = bundle.model("gru4rec")
    arrays = {**m.gru.arrays, "output_bias": m.gru.arrays["output_bias"] * np.float32(scale)}
    arrays["output_bias"] += np.float32(0.5) * np.arange(
        arrays["output_bias"].size, dtype=np.float32
    )
    gru = replace(m.gru, arrays=arrays)
    models = [replace(x, gru=gru) if x.name == "gru4rec" else x for x in bundle.models]
    return replace(bundle, models=models)


def test_a_new_network_is_served_after_a_publish_and_the_old_after_rollback(
    r, redis_url, prefix, bundle, sessions
):
    items = sessions[2]
    first = L.publish_bundle(r, bundle, prefix)
    other = _perturbed(bundle, 0.5)
    with _client(redis_url, prefix) as c:
        before = _items_scores(_ask(c, items))
        second = L.publish_bundle(r, other, prefix)
        after = _wait_for(c, items, second.version)
        net = other.model("gru4rec").gru
        cols = np.searchsorted(net.item_ids, items, sorter=np.argsort(net.item_ids))
        cols = np.argsort(net.item_ids)[cols]
        expected = next_item_scores(net.arrays, cols)
        expected[cols] = -np.inf
        top = np.argsort(-expected, kind="stable")[:20]
        np.testing.assert_array_equal(_items_scores(after)[0], net.item_ids[top])
        assert not np.array_equal(_items_scores(after)[0], before[0])
        assert c.app.state.store.network_loads == 2
        assert L.rollback(r, prefix) == first.version
        back = _wait_for(c, items, first.version)
        np.testing.assert_array_equal(_items_scores(back)[0], before[0])
        # the first network is still held (same digest): the rollback loads nothing
        assert c.app.state.store.network_loads == 2
        # a new version with the very same network reuses it too
        third = L.publish_bundle(r, bundle, prefix)
        _wait_for(c, items, third.version)
        assert c.app.state.store.network_loads == 2


def _wait_for(client, items, version: str, timeout: float = 5.0) -> dict:
    import time

    deadline = time.monotonic() + timeout
    while True:
        body = _ask(client, items)
        if body["version"] == version or time.monotonic() > deadline:
            assert body["version"] == version
            return body
        time.sleep(0.02)


# --- the hand-made bundle: the choice of model, without torch -------------------------------------
@pytest.fixture
def hand_client(r, redis_url, prefix, make_bundle):
    L.publish_bundle(r, make_bundle(gru=True), prefix)
    with _client(redis_url, prefix) as c:
        yield c


def test_the_network_answers_unless_a_model_with_neighbours_is_named(hand_client, make_gru):
    net = make_gru()
    body = _ask(hand_client, [10, 20], n=10)
    # by hand from the layout: columns of 10 and 20, scores of every column, seen ones dropped
    cols = [int(np.flatnonzero(net.item_ids == i)[0]) for i in (10, 20)]
    scores = next_item_scores(net.arrays, np.array(cols))
    scores[cols] = -np.inf
    order = [c for c in np.argsort(-scores, kind="stable") if np.isfinite(scores[c])]
    assert (body["model"], body["source"]) == ("gru4rec", "session")
    assert _items_scores(body)[0].tolist() == net.item_ids[order].tolist()
    assert 60 not in _items_scores(body)[0]  # untrained: never an answer
    body = _ask(hand_client, [10, 20], n=10, model="knn")
    assert (body["model"], _items_scores(body)[0].tolist()) == ("knn", [40, 30, 50])
    body = _ask(hand_client, [10, 20], n=10, model="knn", exclude_seen=False)
    assert _items_scores(body)[0].tolist()[:2] == [10, 20]  # .8 and .72 outrank 40's .6


def test_an_untrained_item_is_ignored_like_an_unknown_one(hand_client):
    body = _ask(hand_client, [60, 30])
    assert body["ignored_item_ids"] == [60] and body["source"] == "session"
    models = hand_client.get("/api/v1/models").json()["models"]
    assert {m["name"]: m["live_session"] for m in models} == {
        "als": False, "knn": False, "gru4rec": True
    }  # fmt: skip


def test_service_imports_no_torch():
    import subprocess
    import sys

    code = (
        "import sys, recsys_serving.app, recsys_serving.gru_live; "
        "bad = [m for m in sys.modules "
        "       if m.split('.')[0] in ('torch', 'dagster', 'recsys_assets')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
