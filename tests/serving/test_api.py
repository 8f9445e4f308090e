"""Every endpoint against a real Redis holding the hand-made bundle (expected lists by hand)."""

from __future__ import annotations

import time

import pytest
from litestar.testing import TestClient

from recsys_serving import redis_layout as L
from recsys_serving.app import create_app
from recsys_serving.service import assign_arm
from recsys_serving.settings import Settings

ADMIN = "api-test-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
def published(r, prefix, bundle):
    return L.publish_bundle(r, bundle, prefix)


@pytest.fixture
def client(redis_url, prefix, published):
    app = create_app(Settings(redis_url=redis_url, prefix=prefix, admin_token=ADMIN))
    with TestClient(app) as c:
        yield c


def ids(body, field="recommendations"):
    return [x["item_id"] for x in body[field]]


def test_health(client, published):
    body = client.get("/api/v1/health").json()
    assert body["status"] == "ok" and body["redis"] is True
    assert body["version"] == published.version
    assert body["models"] == ["als", "knn"] and body["default_model"] == "als"


def test_recommend_personal_with_item_metadata(client, published):
    resp = client.post("/api/v1/recommend", json={"user_id": 100, "n_recommendations": 4})
    assert resp.status_code == 200
    body = resp.json()
    assert ids(body) == [10, 20, 30, 40]
    assert (body["source"], body["cold_start"], body["model"]) == ("personal", False, "als")
    assert (body["model_version"], body["version"]) == ("7", published.version)
    first, _, third, fourth = body["recommendations"]
    assert first == {
        "item_id": 10, "score": 0.9, "rank": 1, "category_id": 1, "price": 9.99, "available": True
    }  # fmt: skip
    assert third["price"] is None and fourth["available"] is None
    assert [x["rank"] for x in body["recommendations"]] == [1, 2, 3, 4]


def test_recommend_other_model_and_n(client):
    body = client.post(
        "/api/v1/recommend", json={"user_id": 100, "n_recommendations": 2, "model": "knn"}
    ).json()
    assert ids(body) == [40, 30] and body["model"] == "knn" and body["model_version"] == "3"
    body = client.post("/api/v1/recommend", json={"user_id": 200}).json()
    assert ids(body) == [50, 10]  # the list is shorter than the default n of 10


def test_user_without_list_gets_flagged_cold_start(client):
    # 400 has a history ([20]) but no list: neighbours of item 20 from knn, the only model with them
    body = client.post("/api/v1/recommend", json={"user_id": 400, "n_recommendations": 5}).json()
    assert (body["source"], body["cold_start"]) == ("session", True)
    assert ids(body) == [10, 40, 50]
    # 999 is unknown everywhere: global popularity
    body = client.post("/api/v1/recommend", json={"user_id": 999, "n_recommendations": 3}).json()
    assert (body["source"], body["cold_start"]) == ("popular", True)
    assert ids(body) == [50, 10, 20]


def test_cold_start_endpoint(client):
    body = client.post("/api/v1/recommend/cold", json={"n_recommendations": 3}).json()
    assert ids(body) == [50, 10, 20] and body["source"] == "popular" and body["cold_start"]
    body = client.post("/api/v1/recommend/cold", json={"category_id": 2}).json()
    assert ids(body) == [40, 30] and body["source"] == "popular_category"
    body = client.post("/api/v1/recommend/cold", json={"category_id": 77}).json()
    assert body["source"] == "popular"  # no list for that category
    body = client.post("/api/v1/recommend/cold", json={"item_ids": [10]}).json()
    assert ids(body) == [20, 30] and body["source"] == "similar" and body["model"] == "knn"


def test_session_combines_neighbours_with_recency_weights(client):
    # 20 (newest, weight 1): 10 .8, 40 .6, 50 .4; 10 (weight .8): 20 .9, 30 .6 -> 30 scores .48;
    # the items already seen (10, 20) are dropped
    body = client.post("/api/v1/recommend/session", json={"item_ids": [10, 20]}).json()
    assert ids(body) == [40, 30, 50]
    assert [round(x["score"], 2) for x in body["recommendations"]] == [0.6, 0.48, 0.4]
    assert body["source"] == "session" and not body["cold_start"]
    body = client.post("/api/v1/recommend/session", json={"item_ids": [60]}).json()
    assert body["source"] == "popular" and body["cold_start"]


def test_similar(client):
    body = client.post("/api/v1/similar/10").json()
    assert ids(body, "similar_items") == [20, 30] and body["source"] == "similar"
    body = client.post("/api/v1/similar/20", json={"n_recommendations": 1}).json()
    assert ids(body, "similar_items") == [10]
    # 40 is in the catalogue without neighbours: popular in its category (2), itself removed
    body = client.post("/api/v1/similar/40").json()
    assert ids(body, "similar_items") == [30] and body["source"] == "popular_category"
    assert client.post("/api/v1/similar/999").status_code == 404
    resp = client.post("/api/v1/similar/10", json={"model": "als"})  # als has no neighbour lists
    assert resp.status_code == 404 and resp.json()["extra"][0]["key"] == "model"


def test_popular(client):
    assert ids(client.get("/api/v1/popular?n=3").json(), "items") == [50, 10, 20]
    body = client.get("/api/v1/popular?category_id=1").json()
    assert ids(body, "items") == [10, 20] and body["source"] == "popular_category"
    assert client.get("/api/v1/popular?category_id=99").status_code == 404


def test_history(client):
    body = client.get("/api/v1/users/100/history").json()
    assert body["known"] is True
    assert [(e["item_id"], e["event"], e["timestamp"]) for e in body["events"]] == [
        (10, "transaction", 1_442_000_002_000),
        (20, "view", 1_442_000_001_000),
    ]
    assert body["events"][0]["category_id"] == 1
    assert client.get("/api/v1/users/100/history?n=1").json()["events"][0]["item_id"] == 10
    body = client.get("/api/v1/users/555/history").json()
    assert body["known"] is False and body["events"] == []


def test_models(client, published):
    body = client.get("/api/v1/models").json()
    assert body["version"] == published.version and body["default_model"] == "als"
    als = body["models"][0]
    assert (als["name"], als["version"], als["n_users"], als["is_default"]) == ("als", "7", 3, True)
    assert als["metrics"] == {"ndcg_at_10": 0.25, "recall_at_20": 0.5}
    assert body["models"][1]["has_similar"] is True


@pytest.mark.parametrize(
    ("method", "url", "body", "field"),
    [
        ("POST", "/api/v1/recommend", {"user_id": "11"}, "user_id"),
        ("POST", "/api/v1/recommend", {"user_id": 1.5}, "user_id"),
        ("POST", "/api/v1/recommend", {"user_id": -1}, "user_id"),
        ("POST", "/api/v1/recommend", {"user_id": True}, "user_id"),
        ("POST", "/api/v1/recommend", {}, "user_id"),
        ("POST", "/api/v1/recommend", {"user_id": 1, "n_recommendations": 0}, "n_recommendations"),
        ("POST", "/api/v1/recommend", {"user_id": 1, "n_recommendations": 101}, "n_recomm"),
        ("POST", "/api/v1/recommend", {"user_id": 1, "n_recommendations": "5"}, "n_recomm"),
        ("POST", "/api/v1/recommend", {"user_id": 1, "model": 3}, "model"),
        ("POST", "/api/v1/recommend", {"user_id": 1, "nn": 3}, "nn"),
        ("POST", "/api/v1/recommend/cold", {"category_id": -2}, "category_id"),
        ("POST", "/api/v1/recommend/session", {"item_ids": []}, "item_ids"),
        ("POST", "/api/v1/recommend/session", {"item_ids": [1, -1]}, "item_ids"),
        ("POST", "/api/v1/recommend/session", {"item_ids": "10"}, "item_ids"),
        ("POST", "/api/v1/similar/-3", None, "item_id"),
        ("POST", "/api/v1/similar/1e3", None, "item_id"),
        ("GET", "/api/v1/popular?n=0", None, "n"),
        ("GET", "/api/v1/popular?n=abc", None, "n"),
        ("GET", "/api/v1/popular?category_id=-1", None, "category_id"),
        ("GET", "/api/v1/users/x1/history", None, "user_id"),
        ("POST", "/api/v1/feedback", {"user_id": 1, "item_id": 2, "event": "like"}, "event"),
        ("POST", "/api/v1/feedback", {"user_id": 1, "event": "click"}, "item_id"),
    ],
)  # fmt: skip
def test_validation_errors_name_the_field(client, method, url, body, field):
    resp = (
        client.request(method, url, json=body) if body is not None else client.request(method, url)
    )
    assert resp.status_code == 400, resp.text
    assert field in resp.text


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        ("/api/v1/recommend", {"user_id": 1, "model": "svd"}, "model"),
        ("/api/v1/recommend/cold", {"item_ids": [10], "model": "svd"}, "model"),
        ("/api/v1/recommend/session", {"item_ids": [10], "model": "svd"}, "model"),
        ("/api/v1/similar/10", {"model": "svd"}, "model"),
        ("/api/v1/experiment", {"name": "e", "control": "svd", "treatment": "knn"}, "control"),
    ],
)
def test_a_model_that_is_not_published_is_404_naming_the_field(client, url, body, field):
    """A well-formed name the served version lacks is a missing resource, as the schema says."""
    resp = client.post(url, json=body, headers=AUTH)
    assert resp.status_code == 404, resp.text
    assert resp.json()["extra"][0]["key"] == field and "svd" in resp.text


def test_malformed_json_is_400(client):
    for raw in (b"{bad json", b"", b"[1, 2]", b"null"):
        resp = client.post(
            "/api/v1/recommend", content=raw, headers={"content-type": "application/json"}
        )
        assert resp.status_code == 400, (raw, resp.status_code, resp.text)


def test_admin_endpoints_need_the_token(client):
    for method, url, body in [
        ("POST", "/api/v1/cache/flush", None),
        ("POST", "/api/v1/models/default", {"model": "knn"}),
        ("POST", "/api/v1/experiment", {"name": "e", "control": "als", "treatment": "knn"}),
        ("DELETE", "/api/v1/experiment", None),
    ]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN}):
            resp = client.request(method, url, json=body, headers=headers)
            assert resp.status_code == 401, (url, headers, resp.status_code)
        assert client.request(method, url, json=body, headers=AUTH).status_code == 200


def test_admin_endpoints_refused_without_a_configured_token(redis_url, prefix, published):
    with TestClient(create_app(Settings(redis_url=redis_url, prefix=prefix))) as c:
        resp = c.post("/api/v1/cache/flush", headers={"Authorization": "Bearer "})
        assert resp.status_code == 403 and "RECSYS_ADMIN_TOKEN" in resp.text


def test_switch_default_model(client):
    resp = client.post("/api/v1/models/default", json={"model": "knn"}, headers=AUTH)
    assert resp.status_code == 200 and resp.json()["default_model"] == "knn"
    body = client.post("/api/v1/recommend", json={"user_id": 100, "n_recommendations": 1}).json()
    assert body["model"] == "knn" and ids(body) == [40]
    resp = client.post("/api/v1/models/default", json={"model": "svd"}, headers=AUTH)
    assert resp.status_code == 404 and resp.json()["extra"][0]["key"] == "model"


def test_cache_stats_and_flush(client):
    client.post("/api/v1/cache/flush", headers=AUTH)
    before = client.get("/api/v1/cache/stats").json()
    for _ in range(3):
        client.post("/api/v1/recommend", json={"user_id": 100})
    after = client.get("/api/v1/cache/stats").json()
    assert after["hits"] - before["hits"] >= 2
    assert after["keys"] >= 1 and 0 < after["hit_rate"] <= 1
    assert after["redis_used_memory"] > 0 and after["redis_keys"] > 0
    flushed = client.post("/api/v1/cache/flush", headers=AUTH).json()["flushed"]
    assert flushed == after["keys"]
    assert client.get("/api/v1/cache/stats").json()["keys"] == 0


def test_ab_assignment_is_stable_and_says_the_arm(client, r, prefix):
    exp = {"name": "als_vs_knn", "control": "als", "treatment": "knn", "treatment_share": 0.5}
    assert client.post("/api/v1/experiment", json=exp, headers=AUTH).status_code == 200
    arms = {}
    for user in (100, 200, *range(1000, 1060)):
        body = client.post("/api/v1/recommend", json={"user_id": user}).json()
        assert body["experiment"] == "als_vs_knn"
        assert body["arm"] == assign_arm(exp, user)
        assert body["model"] == exp[body["arm"]]
        arms[user] = body["arm"]
    assert set(arms.values()) == {"control", "treatment"}
    again = {u: client.post("/api/v1/recommend", json={"user_id": u}).json()["arm"] for u in arms}
    assert again == arms
    # an explicit model is outside the experiment
    body = client.post("/api/v1/recommend", json={"user_id": 100, "model": "als"}).json()
    assert body["arm"] is None
    # the feedback stream carries the arm
    resp = client.post(
        "/api/v1/feedback", json={"user_id": 1001, "item_id": 10, "event": "click", "rank": 2}
    )
    assert resp.status_code == 202 and resp.json()["arm"] == arms[1001]
    ((_, fields),) = r.xrange(f"{prefix}:feedback")
    fields = {k.decode(): v.decode() for k, v in fields.items()}
    assert fields["arm"] == arms[1001] and fields["experiment"] == "als_vs_knn"
    assert fields["model"] == exp[arms[1001]] and fields["event"] == "click"
    assert (fields["user_id"], fields["item_id"], fields["rank"]) == ("1001", "10", "2")
    assert client.delete("/api/v1/experiment", headers=AUTH).status_code == 200
    assert client.post("/api/v1/recommend", json={"user_id": 100}).json()["arm"] is None


def test_experiment_from_bundle_and_from_environment(r, redis_url, prefix, make_bundle):
    b = make_bundle()
    b.ab_experiment = {"name": "b", "control": "als", "treatment": "knn", "treatment_share": 1.0}
    L.publish_bundle(r, b, prefix)
    with TestClient(create_app(Settings(redis_url=redis_url, prefix=prefix))) as c:
        body = c.post("/api/v1/recommend", json={"user_id": 100}).json()
        assert (body["experiment"], body["arm"], body["model"]) == ("b", "treatment", "knn")
    env_exp = {"name": "env", "control": "als", "treatment": "knn", "treatment_share": 0.0}
    settings = Settings(redis_url=redis_url, prefix=prefix, ab_experiment=env_exp)
    with TestClient(create_app(settings)) as c:
        body = c.post("/api/v1/recommend", json={"user_id": 100}).json()
        assert (body["experiment"], body["arm"], body["model"]) == ("env", "control", "als")


def test_feedback_without_experiment(client, r, prefix, published):
    resp = client.post(
        "/api/v1/feedback",
        json={"user_id": 5, "item_id": 20, "event": "transaction", "timestamp": 1_442_000_000_000},
    )
    assert resp.status_code == 202
    body = resp.json()
    assert body["arm"] is None and body["model"] == "als" and body["version"] == published.version
    ((_, fields),) = r.xrange(f"{prefix}:feedback")
    assert fields[b"timestamp"] == b"1442000000000" and fields[b"event"] == b"transaction"


def _wait_for_version(client, version, timeout=3.0):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        body = client.post("/api/v1/recommend", json={"user_id": 100}).json()
        if body["version"] == version:
            return body, time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError(f"version {version} not served after {timeout} s")


def test_new_version_and_rollback_picked_up_without_restart(
    r, redis_url, prefix, published, make_bundle
):
    # a long TTL: only the pub/sub notification can make the switch visible this fast
    settings = Settings(redis_url=redis_url, prefix=prefix, state_ttl=60.0)
    with TestClient(create_app(settings)) as c:
        assert ids(c.post("/api/v1/recommend", json={"user_id": 100}).json())[0] == 10
        deadline = time.monotonic() + 3
        while not c.get("/api/v1/health").json()["pubsub"] and time.monotonic() < deadline:
            time.sleep(0.01)
        second = L.publish_bundle(r, make_bundle(shift=1), prefix)
        body, waited = _wait_for_version(c, second.version)
        assert ids(body)[0] == 60 and waited < 1.0
        assert L.rollback(r, prefix) == published.version
        body, waited = _wait_for_version(c, published.version)
        assert ids(body)[0] == 10 and waited < 1.0


def test_openapi_lists_every_endpoint(client):
    paths = set(client.get("/schema/openapi.json").json()["paths"])
    assert {
        "/api/v1/health",
        "/api/v1/recommend",
        "/api/v1/recommend/cold",
        "/api/v1/recommend/session",
        "/api/v1/similar/{item_id}",
        "/api/v1/popular",
        "/api/v1/cache/stats",
        "/api/v1/cache/flush",
        "/api/v1/feedback",
        "/api/v1/models",
        "/api/v1/models/default",
        "/api/v1/users/{user_id}/history",
        "/api/v1/experiment",
    } <= paths


def test_page_renders_history_cards_and_similar(client):
    resp = client.get("/?user_id=100")
    assert resp.status_code == 200 and "text/html" in resp.headers["content-type"]
    html = resp.text
    assert html.count('class="card"') == 4
    assert 'data-item="10"' in html and "9.99" in html and "transaction" in html
    assert 'href="/?user_id=100&amp;model=&amp;item_id=10#similar"' in html
    assert "<script" not in html and "http://" not in html and "https://" not in html
    html = client.get("/?user_id=100&model=knn&item_id=10").text
    assert html.count('class="card similar-card"') == 2 and "selected" in html
    resp = client.get("/?user_id=abc")
    assert resp.status_code == 400 and "user id must be a non-negative integer" in resp.text
    resp = client.get("/?user_id=1&model=svd")
    assert resp.status_code == 400 and "svd" in resp.text
    assert client.get("/").status_code == 200
