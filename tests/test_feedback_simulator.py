"""The traffic simulator: loopback only, test users from the warehouse, clicks exactly on the
recommended items the user touched in test, and the feedback it posts lands on the stream."""

from __future__ import annotations

import uuid

import duckdb
import polars as pl
import pytest
import redis as redis_lib
from litestar.testing import TestClient

from recsys_devtools.redis_server import ping
from recsys_devtools.simulate_traffic import (
    NotLoopbackError,
    check_loopback,
    main,
    sample_test_users,
    simulate,
)
from recsys_devtools.synthetic_bundle import synthetic_bundle
from recsys_serving.app import create_app
from recsys_serving.redis_layout import delete_prefix
from recsys_serving.redis_layout.keys import Keys
from recsys_serving.redis_layout.writer import publish_bundle
from recsys_serving.settings import Settings as ServingSettings

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:9"]
)
def test_loopback_urls_are_accepted(url):
    check_loopback(url)


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1:8000", "http://8.8.8.8", "ftp://127.0.0.1", "127.0.0.1:8000"]
)
def test_other_urls_are_refused(url, capsys):
    with pytest.raises(NotLoopbackError):
        check_loopback(url)
    assert main(["--url", url, "--users", "1"]) == 2
    assert "refused" in capsys.readouterr().err


def _warehouse(path, touched: dict[int, list[int]]) -> str:
    rows = [(u, i, "test") for u, items in touched.items() for i in items]
    rows += [(999_999, 1, "train")]  # not a test user
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "split"], orient="row")
    with duckdb.connect(str(path)) as con:
        con.execute("create schema recsys")
        con.register("f", frame.to_arrow())
        con.execute("create table recsys.splits as select * from f")
    return str(path)


@pytest.mark.skipif(not ping(REDIS_URL, 0.3), reason="needs the local Redis on 6379")
def test_simulated_clicks_are_the_recommended_items_the_user_touched(tmp_path):
    bundle = synthetic_bundle(n_users=30, n_items=40, models=("als",), list_length=10)
    als = bundle.models[0]
    # even users touched their 2nd and 5th recommended items, odd users nothing recommended
    touched = {
        int(u): ([int(row[1]), int(row[4])] if n % 2 == 0 else [10**9])
        for n, (u, row) in enumerate(zip(als.user_ids[:20], als.items[:20], strict=True))
    }
    path = _warehouse(tmp_path / "w.duckdb", touched)
    users = sample_test_users(path, 100, seed=1)
    assert sorted(u for u, _ in users) == sorted(touched)
    prefix = f"test-sim-{uuid.uuid4().hex[:8]}"
    r = redis_lib.Redis.from_url(REDIS_URL)
    try:
        publish_bundle(r, bundle, prefix)
        app = create_app(ServingSettings(redis_url=REDIS_URL, prefix=prefix))
        with TestClient(app) as client:
            summary = simulate(client, users, k=5, max_seconds=60, progress=False)
        assert summary.users == 20 and not summary.errors
        assert summary.impressions == 20 * 5 and summary.clicks == 10 * 2
        entries = r.xrange(Keys(prefix).feedback)
        events = pl.DataFrame([{k.decode(): v.decode() for k, v in f.items()} for _, f in entries])
        clicks = events.filter(pl.col("event") == "click")
        assert clicks.height == 20
        assert all(
            int(i) in touched[int(u)] for u, i in clicks.select("user_id", "item_id").iter_rows()
        )
        assert set(clicks["rank"]) == {"2", "5"}
        # the time bound holds: nothing is replayed once it has passed
        with TestClient(app) as client:
            assert simulate(client, users, k=5, max_seconds=1e-9, progress=False).users == 0
    finally:
        delete_prefix(r, prefix)
        r.close()
