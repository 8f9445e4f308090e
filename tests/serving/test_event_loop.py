"""What keeps the event loop free of collector stalls (issue 7 §6; figures in the benchmark).

py-spy and GC callbacks in the serving benchmark showed the p99 stalls were full garbage
collections: each walked the ~70k objects of the framework plus every cached list, 65-150 ms on
this machine, every few seconds under load. The fix: what exists at startup is frozen out of the
collector's view, and cached lists are not tracked at all. These tests pin both mechanisms.
"""

from __future__ import annotations

import gc

import numpy as np
from litestar.testing import TestClient

from recsys_serving import redis_layout as L
from recsys_serving.app import create_app
from recsys_serving.settings import Settings
from recsys_serving.store import ServedList


def test_startup_freezes_what_lives_as_long_as_the_process(redis_url, prefix):
    app = create_app(Settings(redis_url=redis_url, prefix=prefix, listen_pubsub=False))
    with TestClient(app):
        assert gc.get_freeze_count() > 10_000  # the framework's objects, out of every collection
        assert len(gc.get_objects()) < gc.get_freeze_count()


def test_cached_lists_and_their_rows_are_not_tracked(r, redis_url, prefix, bundle):
    L.publish_bundle(r, bundle, prefix)
    with TestClient(create_app(Settings(redis_url=redis_url, prefix=prefix))) as c:
        for user in (100, 200, 999):  # two personal lists, one popular fallback
            assert c.post("/api/v1/recommend", json={"user_id": user}).status_code == 200
        cached = [v for v in c.app.state.store.cache._data.values() if isinstance(v, ServedList)]
        # the rows live on the list's view under the default rules (recsys_serving.service)
        assert len(cached) >= 3 and all(v.plain is not None and v.plain.rows for v in cached)
        gc.collect()  # tuples of untracked objects are untracked by a collection
        assert not any(
            gc.is_tracked(v) or gc.is_tracked(v.plain) or gc.is_tracked(v.plain.rows)
            for v in cached
        )


def test_the_fallback_of_an_unknown_user_is_computed_once(r, redis_url, prefix, bundle):
    L.publish_bundle(r, bundle, prefix)
    with TestClient(create_app(Settings(redis_url=redis_url, prefix=prefix))) as c:
        first = c.post("/api/v1/recommend", json={"user_id": 400, "n_recommendations": 2}).json()
        cache = c.app.state.store.cache
        (key,) = [k for k in cache._data if k[1] == "fallback"]
        assert key[-1] == 400 and cache._data[key].source == "session"
        hits = cache.hits
        again = c.post("/api/v1/recommend", json={"user_id": 400, "n_recommendations": 3}).json()
        assert cache.hits - hits == 2  # the user's (absent) list and the fallback: nothing else
        assert first["source"] == again["source"] == "session"
        assert [x["item_id"] for x in again["recommendations"]][:2] == [
            x["item_id"] for x in first["recommendations"]
        ]


def test_served_list_holds_arrays_without_cycles():
    lst = ServedList(np.arange(3), np.ones(3, np.float32))
    assert not gc.is_tracked(lst) and lst.source == "personal"
