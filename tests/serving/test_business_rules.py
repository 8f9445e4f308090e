"""Business rules (recsys_serving.rules) and live availability, in numpy and through every
endpoint against a real Redis.

The hand-made bundle (conftest) has items 10..60 in categories 1, 1, 2, 2, 3, none; categories
1 and 2 sit below 4; prices 9.99, 5, unknown, 20, 1.5, 3. Here item 50, the most popular one,
is published as unavailable.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from litestar.testing import TestClient

from recsys_devtools.synthetic_bundle import synthetic_bundle
from recsys_serving import redis_layout as L
from recsys_serving.app import create_app
from recsys_serving.redis_layout import ItemTable
from recsys_serving.rules import (
    CatalogRules,
    Overrides,
    RuleError,
    ancestor_matrix,
    compile_rules,
)
from recsys_serving.schemas import MAX_EXCLUDED_ITEMS, Boost, Rules
from recsys_serving.settings import Settings

TOKEN = "rules-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OVERRIDES = "/api/v1/items/overrides"


# --- numpy: the per-version arrays and one request's mask ----------------------------------------
def _catalog() -> CatalogRules:
    return CatalogRules(
        ItemTable(
            ids=np.array([10, 20, 30, 40, 50, 60]),
            category=np.array([1, 1, 2, 2, 3, -1]),
            price=np.array([9.99, 5.0, np.nan, 20.0, 1.5, 3.0], np.float32),
            available=np.array([1, 0, 1, -1, 1, 1], np.int8),
            tree_ids=np.array([1, 2, 3, 4, 5]),
            tree_parents=np.array([4, 4, 5, 5, -1]),
        )
    )


ALL = np.array([10, 20, 30, 40, 50, 60, 70])  # 70: not in the catalogue


def _keep(rules: Rules | None = None, overrides: Overrides | None = None, **kw) -> list[int]:
    rs = compile_rules(rules, _catalog(), overrides or Overrides(), **kw)
    keep, _ = rs.filter(ALL)
    return ALL[keep].tolist()


def test_ancestor_matrix_follows_parents_to_the_root():
    anc = ancestor_matrix(np.array([1, 2, 3, 4, 5]), np.array([4, 4, 5, 5, -1]))
    assert anc.tolist() == [[1, 4, 5], [2, 4, 5], [3, 5, -1], [4, 5, -1], [5, -1, -1]]


def test_each_rule_alone():
    assert _keep() == [10, 30, 40, 50, 60, 70]  # only the known-unavailable 20 goes
    assert _keep(Rules(include_unavailable=True)) == ALL.tolist()
    assert _keep(Rules(categories=[1])) == [10]
    assert _keep(Rules(categories=[4])) == [10, 30, 40]  # below 4: categories 1 and 2
    assert _keep(Rules(categories=[5])) == [10, 30, 40, 50]  # the root: every categorised item
    assert _keep(Rules(exclude_categories=[4])) == [50, 60, 70]
    assert _keep(Rules(price_min=3.0)) == [10, 40, 60]  # unknown prices never match a band
    assert _keep(Rules(price_max=5.0)) == [50, 60]
    assert _keep(Rules(price_min=2, price_max=10)) == [10, 60]
    assert _keep(Rules(exclude_items=[10, 60, 99])) == [30, 40, 50, 70]
    seen = (np.array([10, 30, 40]), np.array([0, 1, 2]))  # view, addtocart, transaction
    assert _keep(Rules(exclude_seen=["addtocart"]), history=seen, has_user=True) == [
        10, 40, 50, 60, 70
    ]  # fmt: skip
    assert _keep(Rules(exclude_seen=["view", "transaction"]), history=seen, has_user=True) == [
        30, 50, 60, 70
    ]  # fmt: skip


def test_rules_combine_and_each_removal_is_counted_once():
    rs = compile_rules(
        Rules(categories=[4], price_max=15.0, exclude_items=[30]), _catalog(), Overrides()
    )
    keep, removed = rs.filter(ALL)
    assert ALL[keep].tolist() == [10]
    # 20 unavailable; 30 excluded; 50, 60, 70 outside 4; 40 too dear
    assert removed == {"unavailable": 1, "exclude_items": 1, "categories": 3, "price": 1}
    assert sum(removed.values()) == len(ALL) - keep.sum()


def test_overrides_beat_the_published_availability():
    ov = Overrides.from_hash({b"20": b"available", b"10": b"unavailable", b"60": b"hidden",
                              b"generation": b"g1", b"junk": b"x"})  # fmt: skip
    assert ov.generation == "g1" and ov.as_dict() == {"10": "unavailable", "20": "available",
                                                      "60": "hidden"}  # fmt: skip
    assert _keep(overrides=ov) == [20, 30, 40, 50, 70]
    # include_unavailable shows unavailable items again, but never hidden ones
    assert _keep(Rules(include_unavailable=True), overrides=ov) == [10, 20, 30, 40, 50, 70]
    assert _catalog().availability(np.array([10, 20, 40, 70]), ov).tolist() == [0, 1, -1, -1]


def test_boost_reorders_within_a_source_whatever_the_sign_of_the_scores():
    rs = compile_rules(Rules(boost=Boost(factor=3.0, categories=[2])), _catalog(), Overrides())
    items = np.array([10, 50, 30])
    order, boosted = rs.boost(items, np.array([-0.1, -0.2, -0.3], np.float32))
    assert items[order].tolist() == [30, 10, 50] and boosted.tolist() == [True, False, False]
    band = compile_rules(Rules(boost=Boost(factor=10, price_max=2.0)), _catalog(), Overrides())
    order, _ = band.boost(items, np.array([3.0, 2.0, 1.0], np.float32))
    assert items[order].tolist() == [50, 10, 30]


@pytest.mark.parametrize(
    ("rules", "kw", "field"),
    [
        (Rules(categories=[99]), {}, "rules.categories"),
        (Rules(exclude_categories=[1, 98]), {}, "rules.exclude_categories"),
        (Rules(price_min=5, price_max=1), {}, "rules.price_min"),
        (Rules(exclude_seen=["view"]), {}, "rules.exclude_seen"),
        (Rules(boost=Boost(factor=2)), {}, "rules.boost"),
        (Rules(boost=Boost(factor=2, categories=[77])), {}, "rules.boost.categories"),
        (Rules(categories=[99]), {"where": ""}, "categories"),
        (Rules(boost=Boost(factor=2, categories=[77])), {"where": ""}, "boost_categories"),
    ],
)
def test_rules_the_catalogue_refuses_name_their_field(rules, kw, field):
    with pytest.raises(RuleError) as err:
        compile_rules(rules, _catalog(), Overrides(), **kw)
    assert err.value.field == field


# --- through the service ------------------------------------------------------------------------
@pytest.fixture
def published(r, prefix, make_bundle):
    return L.publish_bundle(r, make_bundle(unavailable=(50,)), prefix)


def _app(redis_url, prefix, **kw):
    return TestClient(create_app(Settings(redis_url=redis_url, prefix=prefix, admin_token=TOKEN,
                                          **kw)))  # fmt: skip


@pytest.fixture
def client(redis_url, prefix, published):
    with _app(redis_url, prefix) as c:
        yield c


def ids(body: dict) -> list[int]:
    rows = next(body[k] for k in ("recommendations", "similar_items", "items") if k in body)
    return [x["item_id"] for x in rows]


def post(client, path: str, body: dict, status: int = 200) -> dict:
    resp = client.post(path, json=body)
    assert resp.status_code == status, resp.text
    return resp.json()


def test_unavailable_items_are_left_out_and_the_answer_topped_up(client):
    # user 300's als list is 60, 50, 40, 30: 50 is unavailable
    body = post(client, "/api/v1/recommend", {"user_id": 300, "n_recommendations": 4})
    assert ids(body) == [60, 40, 30, 10]
    assert body["filtering"]["removed"] == {"unavailable": 1}
    assert body["filtering"]["topped_up_from"] == ["similar"]  # knn's neighbours of 60..30
    assert [x["rank"] for x in body["recommendations"]] == [1, 2, 3, 4]
    body = post(client, "/api/v1/recommend", {"user_id": 300, "n_recommendations": 4,
                                              "rules": {"include_unavailable": True}})  # fmt: skip
    assert ids(body) == [60, 50, 40, 30] and body["filtering"]["removed"] == {}
    assert body["recommendations"][1]["available"] is False


@pytest.mark.parametrize(
    ("rules", "expected", "removed"),
    [
        ({"categories": [2]}, [30, 40], {"categories": 2}),
        ({"categories": [4]}, [10, 20, 30, 40], {}),  # 4 is the parent of 1 and 2
        ({"exclude_categories": [1]}, [30, 40, 60], {"exclude_categories": 2}),
        ({"price_min": 6}, [10, 40], {"price": 2}),
        ({"price_max": 6}, [20, 60], {"price": 3}),
        ({"exclude_items": [20, 30]}, [10, 40, 60], {"exclude_items": 2}),
        ({"exclude_seen": ["transaction"]}, [20, 30, 40, 60], {"exclude_seen": 1}),
        ({"exclude_seen": ["view"]}, [10, 30, 40, 60], {"exclude_seen": 1}),  # 100 viewed 20
        ({"categories": [4], "price_max": 10, "exclude_items": [10]}, [20], None),
    ],
)
def test_each_rule_on_recommend(client, rules, expected, removed):
    body = post(client, "/api/v1/recommend",
                {"user_id": 100, "n_recommendations": 4, "rules": rules})  # fmt: skip
    assert ids(body) == expected
    if removed is not None:  # at least what the list removed (top-up sources may add some)
        got = body["filtering"]["removed"]
        assert all(got.get(k, 0) >= v for k, v in removed.items()), got


def test_boost_lifts_matching_items_before_the_cut(client):
    body = post(client, "/api/v1/recommend", {"user_id": 100, "n_recommendations": 2,
                                              "rules": {"boost": {"factor": 10,
                                                                  "categories": [2]}}})  # fmt: skip
    # scores 0.9, 0.8, 0.5, 0.1: category 2's 30 and 40 become 5.0 and 1.0
    assert ids(body) == [30, 40] and body["filtering"]["boosted"] == 2


def test_rules_apply_on_every_endpoint(client):
    rules = {"exclude_items": [20]}
    body = post(client, "/api/v1/similar/10", {"rules": rules})
    assert 20 not in ids(body) and 50 not in ids(body) and 10 not in ids(body)
    body = post(client, "/api/v1/recommend/cold", {"n_recommendations": 3, "rules": rules})
    assert ids(body) == [10, 30, 40]  # popular 50 (unavailable), 10, 20 (excluded), 30, 40
    body = post(client, "/api/v1/recommend/session", {"item_ids": [10], "rules": rules})
    assert 20 not in ids(body) and 10 not in ids(body) and 50 not in ids(body)
    resp = client.get("/api/v1/popular", params={"n": 3, "exclude_items": "20,30"})
    assert resp.status_code == 200 and ids(resp.json()) == [10, 40, 60]
    resp = client.get("/api/v1/popular", params={"n": 3, "categories": "4", "price_max": "9"})
    assert ids(resp.json()) == [20]
    resp = client.get("/api/v1/popular", params={"boost_factor": 50, "boost_categories": "2"})
    assert ids(resp.json())[:2] == [30, 40]
    resp = client.get("/api/v1/popular", params={"exclude_seen": "transaction", "user_id": 100})
    assert 10 not in ids(resp.json())


def test_popular_of_a_category_stays_in_it(client):
    resp = client.get("/api/v1/popular", params={"category_id": 1, "n": 5})
    assert ids(resp.json()) == [10, 20]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/recommend", {"user_id": 1, "rules": {"categories": [99]}}, "rules.categories"),
        ("/api/v1/recommend", {"user_id": 1, "rules": {"price_min": 9, "price_max": 2}},
         "rules.price_min"),
        ("/api/v1/recommend", {"user_id": 1, "rules": {"price_max": -1}}, "rules.price_max"),
        ("/api/v1/recommend",
         {"user_id": 1, "rules": {"exclude_items": list(range(MAX_EXCLUDED_ITEMS + 1))}},
         "rules.exclude_items"),
        ("/api/v1/recommend", {"user_id": 1, "rules": {"exclude_seen": ["click"]}},
         "rules.exclude_seen"),
        ("/api/v1/recommend", {"user_id": 1, "rules": {"boost": {"factor": 0, "categories": [1]}}},
         "rules.boost.factor"),
        ("/api/v1/recommend", {"user_id": 1, "rules": {"colour": "red"}}, "rules"),
        ("/api/v1/similar/10", {"rules": {"exclude_seen": ["view"]}}, "rules.exclude_seen"),
        ("/api/v1/recommend/cold", {"rules": {"exclude_categories": [7]}},
         "rules.exclude_categories"),
        ("/api/v1/recommend/session", {"item_ids": [10], "rules": {"boost": {"factor": 2}}},
         "rules.boost"),
    ],
)  # fmt: skip
def test_invalid_rules_are_400_naming_the_field(client, path, body, field):
    got = post(client, path, body, status=400)
    assert got["extra"][0]["key"] == field, got


@pytest.mark.parametrize(
    ("params", "field"),
    [({"categories": "99"}, "categories"), ({"price_min": "-1"}, "price_min"),
     ({"price_min": "5", "price_max": "1"}, "price_min"),
     ({"exclude_items": "1,x"}, "exclude_items"),
     ({"exclude_seen": "view"}, "exclude_seen"), ({"boost_categories": "1"}, "boost_factor"),
     ({"boost_factor": "2", "boost_categories": "42"}, "boost_categories")],
)  # fmt: skip
def test_invalid_query_rules_are_400_naming_the_parameter(client, params, field):
    resp = client.get("/api/v1/popular", params=params)
    assert resp.status_code == 400, resp.text
    assert field in resp.json()["detail"], resp.text


# --- live availability -----------------------------------------------------------------------
def test_overrides_need_the_admin_token(client):
    assert client.get(OVERRIDES).status_code == 401
    assert client.post(OVERRIDES, json={"hidden": [10]}).status_code == 401
    assert client.delete(OVERRIDES).status_code == 401


def test_an_override_holds_at_once_for_every_model_cache_and_worker(client, redis_url, prefix):
    with _app(redis_url, prefix) as other:  # a second worker on the same Redis
        for c in (client, other):  # warm both LRUs with raw lists and built rows
            assert ids(post(c, "/api/v1/recommend", {"user_id": 100})) == [10, 20, 30, 40]
            assert ids(post(c, "/api/v1/recommend", {"user_id": 100, "model": "knn"})) == [
                40, 30, 20, 10
            ]  # fmt: skip
        resp = client.post(OVERRIDES, json={"unavailable": [20], "hidden": [40]}, headers=AUTH)
        assert resp.status_code == 200
        assert resp.json()["overrides"] == {"20": "unavailable", "40": "hidden"}
        # this worker: at once, on every model and endpoint
        assert 20 not in ids(post(client, "/api/v1/recommend", {"user_id": 100}))
        knn = {"user_id": 100, "model": "knn", "n_recommendations": 2}
        assert ids(post(client, "/api/v1/recommend", knn)) == [30, 10]
        assert 20 not in ids(post(client, "/api/v1/similar/10", {}))
        assert 20 not in ids(client.get("/api/v1/popular").json())
        everything = {"user_id": 100, "rules": {"include_unavailable": True}}
        body = post(client, "/api/v1/recommend", everything)
        assert 20 in ids(body) and 40 not in ids(body)  # hidden stays hidden
        # the other worker: on the channel's message (or the pointer's TTL at the latest)
        deadline = time.monotonic() + 3
        while 20 in ids(post(other, "/api/v1/recommend", {"user_id": 100})):
            assert time.monotonic() < deadline, "the other worker never saw the override"
            time.sleep(0.02)
        # make the published-unavailable 50 available; clear 40's override
        body = client.post(OVERRIDES, json={"available": [50], "clear": [40]}, headers=AUTH).json()
        assert body["overrides"] == {"20": "unavailable", "50": "available"}
        assert client.get(OVERRIDES, headers=AUTH).json()["count"] == 2
        assert ids(post(client, "/api/v1/recommend", {"user_id": 300})) == [60, 50, 40, 30]
        # DELETE: the published availability again
        assert client.delete(OVERRIDES, headers=AUTH).json()["count"] == 0
        assert ids(post(client, "/api/v1/recommend", {"user_id": 100})) == [10, 20, 30, 40]


def test_overrides_outlive_a_publish(client, r, prefix, make_bundle):
    client.post(OVERRIDES, json={"hidden": [10]}, headers=AUTH)
    new = L.publish_bundle(r, make_bundle(shift=1), prefix)
    deadline = time.monotonic() + 3
    while (body := post(client, "/api/v1/recommend", {"user_id": 300}))["version"] != new.version:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert ids(body) == [20, 30, 40, 50, 60]  # the shifted list 10, 20, 30, 40 without 10


def test_an_item_named_twice_takes_the_strongest_state(client):
    body = {"available": [10, 20, 30], "unavailable": [20, 30], "hidden": [30], "clear": [10, 40]}
    resp = client.post(OVERRIDES, json=body, headers=AUTH)
    assert resp.status_code == 200, resp.text
    assert resp.json()["overrides"] == {"10": "available", "20": "unavailable", "30": "hidden"}


# --- a synthetic bundle whose most popular item is unavailable --------------------------------
@pytest.fixture
def synthetic(r, redis_url, prefix):
    bundle = synthetic_bundle(200, 300, ("als", "itemknn"), seed=5, unavailable_share=0.4,
                              top_unavailable=True, list_length=40)  # fmt: skip
    L.publish_bundle(r, bundle, prefix)
    with _app(redis_url, prefix) as c:
        yield bundle, c


def test_no_endpoint_returns_an_unavailable_item_by_default(synthetic):
    bundle, c = synthetic
    unavailable = set(bundle.item_ids[bundle.item_available == 0].tolist())
    top = int(bundle.popular_items[0])
    assert top in unavailable
    answers = []
    for user in bundle.models[0].user_ids[:20].tolist() + [2, 5]:  # 2, 5: no list (cold)
        answers.append(post(c, "/api/v1/recommend", {"user_id": user, "n_recommendations": 20}))
        answers.append(post(c, "/api/v1/recommend", {"user_id": user, "model": "itemknn"}))
    for item in bundle.item_ids[:15].tolist() + [top]:
        answers.append(post(c, f"/api/v1/similar/{item}", {"n_recommendations": 20}))
        answers.append(post(c, "/api/v1/recommend/session", {"item_ids": [item, top]}))
        answers.append(post(c, "/api/v1/recommend/cold", {"item_ids": [item]}))
    for cat in range(5):
        answers.append(post(c, "/api/v1/recommend/cold", {"category_id": cat}))
        answers.append(c.get("/api/v1/popular", params={"category_id": cat, "n": 30}).json())
    answers.append(post(c, "/api/v1/recommend/cold", {"n_recommendations": 50}))
    answers.append(c.get("/api/v1/popular", params={"n": 50}).json())
    shown = {i for a in answers for i in ids(a)}
    assert shown and not shown & unavailable
    assert all(x["available"] is not False for a in answers for x in a.get("recommendations", []))


def test_the_answer_has_n_items_whenever_n_qualify(synthetic):
    bundle, c = synthetic
    table = dict(zip(bundle.item_ids.tolist(), bundle.item_category.tolist(), strict=True))
    rules = {"exclude_categories": [20, 21], "price_max": 80.0}  # roots 20, 21: half the leaves
    for user in bundle.models[0].user_ids[:10].tolist():
        body = post(c, "/api/v1/recommend",
                    {"user_id": user, "n_recommendations": 30, "rules": rules})  # fmt: skip
        got = ids(body)
        assert len(got) == 30 == len(set(got)), body["filtering"]
        assert body["filtering"]["topped_up_from"]  # 40-item lists cannot give 30 alone
        assert not {table[i] % 4 for i in got} & {0, 1}  # leaves under roots 20 and 21
    # a category filter: neighbours first, then the category's own popular lists
    body = post(c, "/api/v1/recommend", {"user_id": 1, "n_recommendations": 20,
                                         "rules": {"categories": [23]}})  # fmt: skip
    assert len(ids(body)) == 20 and {table[i] % 4 for i in ids(body)} == {3}
    assert "popular_category" in body["filtering"]["topped_up_from"]
