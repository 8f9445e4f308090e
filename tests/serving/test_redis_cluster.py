"""The layout on a real three-master Redis Cluster: publish, serve, switch, roll back, clean up.

The cluster is started from the installed ``redis-server`` binary on loopback ports
(:mod:`recsys_devtools.redis_cluster`). The same publishes go to the single Redis of the other
tests under another prefix, and every answer of the service over the cluster must equal its
answer over the single server, at each step: one version, a second one (announced by pub/sub,
which on a cluster the service hears through one node), after a rollback, after admin changes.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest
from litestar.testing import TestClient
from redis.cluster import RedisCluster

from recsys_assets.defs.feedback.consume import entries_added, read_entries
from recsys_assets.resources import RedisResource
from recsys_devtools.redis_cluster import RedisClusterServers
from recsys_devtools.synthetic_bundle import synthetic_bundle
from recsys_serving import redis_layout as L
from recsys_serving.app import create_app
from recsys_serving.redis_layout.clients import RedisTarget, parse_redis_url
from recsys_serving.redis_layout.pages import publish_pages
from recsys_serving.settings import Settings

ADMIN = "cluster-test-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
MODELS = ("als", "itemknn")


@pytest.fixture(scope="module")
def cluster():
    with RedisClusterServers(masters=3) as servers:
        yield servers


@pytest.fixture
def rc(cluster):
    """The graph's client: ``RedisResource`` (the Dagster resource) over the cluster URL."""
    client = RedisResource(url=cluster.url).reachable_client()
    assert isinstance(client, RedisCluster)
    yield client
    client.close()


def _bundle(seed: int):
    b = synthetic_bundle(n_users=600, n_items=300, models=MODELS, list_length=20, seed=seed)
    b.item_available = np.ones_like(b.item_available)  # answers = the published lists
    return b


def _requests(b) -> list[tuple[str, str, dict | None]]:
    users = b.models[0].user_ids
    items = b.item_ids
    reqs: list[tuple[str, str, dict | None]] = []
    for u in [*users[:: len(users) // 12].tolist(), 2, 5]:  # 2 and 5 have no list: fallback
        reqs.append(("POST", "/api/v1/recommend", {"user_id": u, "n_recommendations": 10}))
        reqs.append(("GET", f"/api/v1/users/{u}/history?n=5", None))
    reqs.append(("POST", "/api/v1/recommend", {"user_id": int(users[7]), "model": "itemknn"}))
    for i in items[::60].tolist():
        reqs.append(("POST", f"/api/v1/similar/{i}", {"n_recommendations": 5}))
    # several items: one pipeline of lookups whose blobs live on different masters
    reqs.append(("POST", "/api/v1/recommend/session", {"item_ids": items[3:40:4].tolist()}))
    reqs.append(("POST", "/api/v1/recommend/cold", {"category_id": 3}))
    reqs.append(("GET", "/api/v1/popular?n=5", None))
    return reqs


def _answers(client: TestClient, reqs) -> list:
    out = []
    for method, url, body in reqs:
        resp = client.request(method, url, json=body)
        assert resp.status_code == 200, (url, body, resp.text)
        out.append(resp.json())
    return out


def _wait_version(client: TestClient, version: str, timeout: float = 5.0) -> None:
    """Pointer reads are trusted for a minute here: only a pub/sub message makes it re-read."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/api/v1/health").json()["version"] == version:
            return
        time.sleep(0.05)
    raise AssertionError(f"the service did not switch to version {version} within {timeout} s")


def _keys_per_node(cluster, prefix: str, version: str) -> list[int]:
    keys = L.Keys(prefix)
    counts = []
    for node in cluster.node_clients():
        n = sum(
            keys.version_of(k) == version
            for pattern in keys.version_patterns
            for k in node.scan_iter(match=pattern, count=1000)
        )
        counts.append(n)
        node.close()
    return counts


def test_redis_url_selects_cluster():
    assert parse_redis_url("redis+cluster://h:7000") == RedisTarget("redis://h:7000", True)
    assert parse_redis_url("rediss+cluster://h:7000/0").cluster
    assert not parse_redis_url("redis://h:6379/2").cluster
    with pytest.raises(ValueError, match="REDIS_URL.*only database 0"):
        parse_redis_url("redis+cluster://h:7000/3")
    with pytest.raises(ValueError, match="REDIS_URL"):
        parse_redis_url("http://h:7000")


def test_publish_serve_switch_and_roll_back_on_a_cluster(cluster, rc, r, redis_url, prefix):
    cprefix = f"cluster-{uuid.uuid4().hex[:8]}"
    b1, b2 = _bundle(1), _bundle(2)
    reqs = _requests(b1)
    # blobs of ~2 KB: a few hundred keys per version, enough to see them spread
    pub = dict(blob_bytes=2048)
    c1, s1 = L.publish_bundle(rc, b1, cprefix, **pub), L.publish_bundle(r, b1, prefix, **pub)
    assert c1.version == s1.version == "1" and c1.keys == s1.keys

    per_node = _keys_per_node(cluster, cprefix, c1.version)
    print(f"\nversion {c1.version}: {sum(per_node)} keys, per master {per_node}")
    assert sum(per_node) == c1.keys
    assert min(per_node) > sum(per_node) / 6, per_node  # spread over all three, not pinned

    def app(url, p):
        return create_app(Settings(redis_url=url, prefix=p, admin_token=ADMIN, state_ttl=60.0))

    with TestClient(app(cluster.url, cprefix)) as cc, TestClient(app(redis_url, prefix)) as sc:
        v1 = _answers(cc, reqs)
        assert v1 == _answers(sc, reqs)
        first = v1[0]
        assert first["version"] == "1" and first["source"] == "personal"
        expected = b1.models[0].items[0][:10].tolist()
        assert [x["item_id"] for x in first["recommendations"]] == expected

        # a second version: switched by the script, heard through the cluster's pub/sub
        c2 = L.publish_bundle(rc, b2, cprefix, **pub)
        L.publish_bundle(r, b2, prefix, **pub)
        assert (c2.version, c2.previous) == ("2", "1")
        _wait_version(cc, "2")
        _wait_version(sc, "2")
        reqs2 = _requests(b2)  # another catalogue
        v2 = _answers(cc, reqs2)
        assert v2 == _answers(sc, reqs2) and v2 != v1
        expected = b2.models[0].items[0][:10].tolist()
        assert [x["item_id"] for x in v2[0]["recommendations"]] == expected

        # rollback: the pointers swap atomically, the service serves version 1 again
        assert L.rollback(rc, cprefix) == "1" and L.rollback(r, prefix) == "1"
        _wait_version(cc, "1")
        _wait_version(sc, "1")
        assert _answers(cc, reqs) == v1
        models = cc.get("/api/v1/models").json()
        assert (models["version"], models["previous"]) == ("1", "2")

        # admin writes from the service (HSET + PUBLISH through the asyncio cluster client)
        for c in (cc, sc):
            resp = c.post("/api/v1/models/default", json={"model": "itemknn"}, headers=AUTH)
            assert resp.is_success
            assert c.post("/api/v1/cache/flush", headers=AUTH).is_success
        deadline = time.monotonic() + 5
        while cc.post(reqs[0][1], json=reqs[0][2]).json()["model"] != "itemknn":
            assert time.monotonic() < deadline, "default model override not heard"
            time.sleep(0.05)
        assert _answers(cc, reqs) == _answers(sc, reqs)
        assert cc.get("/api/v1/cache/stats").status_code == 200

        # live item overrides (one deployment-slot hash): a hidden item leaves every answer
        top = cc.post(reqs[0][1], json=reqs[0][2]).json()["recommendations"][0]["item_id"]
        for c in (cc, sc):
            resp = c.post("/api/v1/items/overrides", json={"hidden": [top]}, headers=AUTH)
            assert resp.is_success, resp.text
        deadline = time.monotonic() + 5
        while top in [
            x["item_id"] for x in cc.post(reqs[0][1], json=reqs[0][2]).json()["recommendations"]
        ]:
            assert time.monotonic() < deadline, "item override not heard"
            time.sleep(0.05)
        assert _answers(cc, reqs) == _answers(sc, reqs)

        # feedback: XADD by the service, read back as the graph's consumer reads it
        fb = {"user_id": 7, "item_id": int(b1.item_ids[0]), "event": "click", "rank": 1}
        assert cc.post("/api/v1/feedback", json=fb).status_code == 202
        stream = L.Keys(cprefix).feedback
        ((_, fields),) = read_entries(rc, stream, "0-0", 10)
        assert fields[b"event"] == b"click" and rc.xlen(stream) == 1
        assert entries_added(rc, stream) in (0, 1)  # XINFO STREAM; Redis 6.2 does not count

    # a third publish deletes version 2 (neither current nor previous) from every master
    c3 = L.publish_bundle(rc, b2, cprefix, **pub)
    assert (c3.version, c3.previous, c3.deleted_versions) == ("3", "1", ["2"])
    assert _keys_per_node(cluster, cprefix, "2") == [0, 0, 0]
    assert min(_keys_per_node(cluster, cprefix, "3")) > 0

    # the pages' reports: one hash per publish, the older ones deleted
    docs = {p: {"n": i} for i, p in enumerate(("home", "analytics", "experiments"))}
    assert publish_pages(rc, docs, {}, cprefix).publish == 1
    second = publish_pages(rc, docs, {}, cprefix)
    third = publish_pages(rc, docs, {}, cprefix)
    assert (second.previous, third.previous, third.deleted) == (1, 2, [1])

    # everything of the deployment, on every master, goes with delete_prefix
    assert L.delete_prefix(rc, cprefix) > 0
    nodes = cluster.node_clients()
    assert [n.dbsize() for n in nodes] == [0, 0, 0]
    for n in nodes:
        n.close()
