"""The online loop against a real Redis (own key prefix) and a temporary DuckDB file:
the stream consumed exactly once, the sensor, and feedback posted to the service ending up in
``online_ab_report`` with the counts that were posted."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
import redis as redis_lib
from dagster_duckdb import DuckDBResource
from litestar.testing import TestClient

from recsys_assets.defs.feedback import consume
from recsys_assets.defs.feedback.assets import feedback_events, online_ab_report
from recsys_assets.defs.feedback.consume import consume_feedback, stored_offset
from recsys_assets.defs.feedback.sensors import MIN_NEW_ENTRIES, feedback_sensor
from recsys_assets.io_managers import WarehouseIOManager
from recsys_assets.resources import RedisResource
from recsys_devtools.synthetic_bundle import synthetic_bundle
from recsys_serving.app import create_app
from recsys_serving.redis_layout.keys import Keys
from recsys_serving.redis_layout.writer import publish_bundle
from recsys_serving.settings import Settings as ServingSettings


@pytest.fixture
def conn(tmp_path: Path):
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    yield connection
    connection.close()


def post(r, stream: str, n: int, event: str = "impression", user0: int = 0) -> list[bytes]:
    now = int(time.time() * 1000)
    fields = {"item_id": "7", "event": event, "timestamp": str(now), "model": "als",
              "version": "1", "experiment": "", "arm": "", "rank": "1"}  # fmt: skip
    return [r.xadd(stream, {"user_id": str(user0 + i), **fields}) for i in range(n)]


def rows(conn, stream: str) -> int:
    return conn.execute(
        "select count(*) from recsys.feedback_events where stream = ?", [stream]
    ).fetchone()[0]


def test_consumed_once_and_rerun_does_not_double_count(r, prefix, conn):
    stream = Keys(prefix).feedback
    ids = post(r, stream, 25)
    report = consume_feedback(r, stream, conn)
    assert (report.read, report.stored, rows(conn, stream)) == (25, 25, 25)
    assert stored_offset(conn, "recsys", stream) == ids[-1].decode()
    again = consume_feedback(r, stream, conn)
    assert (again.read, rows(conn, stream)) == (0, 25)
    more = post(r, stream, 5, event="click", user0=100)
    report = consume_feedback(r, stream, conn)
    assert (report.read, rows(conn, stream)) == (5, 30)
    assert report.previous_id == ids[-1].decode() and report.last_id == more[-1].decode()
    assert report.by_event == {"click": 5}


def test_run_failing_after_reading_does_not_advance_the_offset(r, prefix, conn, monkeypatch):
    stream = Keys(prefix).feedback
    post(r, stream, 10)
    consume_feedback(r, stream, conn)
    before = stored_offset(conn, "recsys", stream)
    post(r, stream, 7, user0=50)

    def crash(*args, **kwargs):  # the process dies after the rows went in, before the offset
        raise RuntimeError("killed mid-commit")

    monkeypatch.setattr(consume, "_store_offset", crash)
    with pytest.raises(RuntimeError, match="killed mid-commit"):
        consume_feedback(r, stream, conn)
    assert stored_offset(conn, "recsys", stream) == before
    assert rows(conn, stream) == 10  # the inserted rows were rolled back with it
    monkeypatch.undo()
    report = consume_feedback(r, stream, conn)
    assert (report.read, rows(conn, stream)) == (7, 17)


def test_redis_down_writes_nothing(r, prefix, conn):
    stream = Keys(prefix).feedback
    post(r, stream, 3)
    consume_feedback(r, stream, conn)
    dead = redis_lib.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    with pytest.raises(redis_lib.ConnectionError):
        consume_feedback(dead, stream, conn)
    assert rows(conn, stream) == 3
    post(r, stream, 2, user0=9)
    assert consume_feedback(r, stream, conn).read == 2


def test_bad_entries_are_skipped_and_named_and_trimming_is_reported(r, prefix, conn):
    stream = Keys(prefix).feedback
    post(r, stream, 2)
    bad = r.xadd(stream, {"user_id": "x", "item_id": "1", "event": "click", "timestamp": "1"})
    report = consume_feedback(r, stream, conn)
    assert (report.read, report.stored) == (3, 2)
    assert [(b.stream_id, b.reason.split(":")[0]) for b in report.rejected] == [
        (bad.decode(), "user_id")
    ]
    assert report.last_id == bad.decode() and report.lost_entries == 0
    # Redis trims entries nobody has read yet: the next run says they were lost.
    post(r, stream, 5, user0=20)
    r.xtrim(stream, maxlen=2, approximate=False)
    report = consume_feedback(r, stream, conn)
    assert (report.lost_entries, report.read) == (3, 2)
    assert consume_feedback(r, stream, conn).lost_entries == 0  # counted once


def test_sensor_requests_a_run_once_enough_feedback_has_accumulated(redis_url, r, prefix):
    resources = {"redis": RedisResource(url=redis_url, prefix=prefix)}
    stream = Keys(prefix).feedback
    with dg.instance_for_test() as instance:

        def evaluate(cursor):
            context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            return feedback_sensor(context), context.cursor

        result, cursor = evaluate(None)
        assert isinstance(result, dg.SkipReason) and cursor is None  # no stream yet
        post(r, stream, MIN_NEW_ENTRIES - 1)
        result, cursor = evaluate(None)
        assert isinstance(result, dg.SkipReason) and "not yet" in result.skip_message
        last = post(r, stream, 1, user0=500)[-1].decode()
        result, cursor = evaluate(None)
        assert isinstance(result, dg.RunRequest) and result.run_key == f"{stream}:{last}"
        assert cursor == last
        result, _ = evaluate(cursor)
        assert isinstance(result, dg.SkipReason)  # nothing new after the requested id
        # a few entries whose oldest has waited past the age limit also request a run
        r.xadd(stream, {"user_id": "1"}, id=f"{int(last.split('-')[0]) + 1}-0")
        result, _ = evaluate(cursor)
        assert isinstance(result, dg.SkipReason)
        r.delete(stream)
        old = r.xadd(stream, {"user_id": "1"}, id="1000-0").decode()
        result, cursor = evaluate("0-0")
        assert isinstance(result, dg.RunRequest) and cursor == old


@pytest.mark.parametrize(
    "url",
    # a cluster client connects when it is created: that failure is a skip too, not an error
    ["redis://127.0.0.1:1/0", "redis+cluster://127.0.0.1:1"],
    ids=["single", "cluster"],
)
def test_sensor_skips_when_redis_is_down(url):
    resources = {"redis": RedisResource(url=url, prefix="none")}
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources=resources)
        result = feedback_sensor(context)
    assert isinstance(result, dg.SkipReason) and "unreachable" in result.skip_message


def test_feedback_posted_to_the_service_appears_in_online_ab_report(redis_url, r, prefix, tmp_path):
    bundle = synthetic_bundle(n_users=60, n_items=40, models=("als", "itemknn"), list_length=10)
    bundle.ab_experiment = {
        "name": "als_vs_knn", "control": "als", "treatment": "itemknn", "treatment_share": 0.5,
    }  # fmt: skip
    publish_bundle(r, bundle, prefix)
    posted: dict[str, dict[str, int]] = {"control": {}, "treatment": {}}
    with TestClient(create_app(ServingSettings(redis_url=redis_url, prefix=prefix))) as client:
        users = [int(u) for u in bundle.models[0].user_ids[:40]]
        for n, user in enumerate(users):
            answer = client.post(
                "/api/v1/recommend", json={"user_id": user, "n_recommendations": 3}
            ).json()
            for rank, item in enumerate(answer["recommendations"], start=1):
                events = ["impression"] + (["click"] if (n + rank) % 4 == 0 else [])
                for event in events:
                    body = {"user_id": user, "item_id": item["item_id"], "event": event,
                            "rank": rank}  # fmt: skip
                    resp = client.post("/api/v1/feedback", json=body)
                    assert resp.status_code == 202, resp.text
                    arm = resp.json()["arm"]
                    posted[arm][event] = posted[arm].get(event, 0) + 1
    assert posted["control"] and posted["treatment"]

    database = str(tmp_path / "warehouse.duckdb")
    resources = {
        "io_manager": WarehouseIOManager(database=database, schema="recsys"),
        "warehouse": DuckDBResource(database=database),
        "redis": RedisResource(url=redis_url, prefix=prefix),
    }
    with dg.instance_for_test() as instance:
        for _ in range(2):  # the second run finds nothing new: the report must not change
            result = dg.materialize(
                [feedback_events, online_ab_report], resources=resources, instance=instance
            )
            assert result.success
    with duckdb.connect(database, read_only=True) as con:
        report = pl.from_arrow(con.sql("select * from recsys.online_ab_report").arrow())
    overall = report.filter((pl.col("day") == "all") & (pl.col("experiment") == "als_vs_knn"))
    for arm, counts in posted.items():
        row = overall.filter(pl.col("arm") == arm).row(0, named=True)
        assert (row["impressions"], row["clicks"]) == (counts["impression"], counts["click"])
        assert row["models"] == {"control": "als", "treatment": "itemknn"}[arm]
    treatment = overall.filter(pl.col("arm") == "treatment").row(0, named=True)
    assert treatment["ctr_diff"] == pytest.approx(
        treatment["ctr"] - overall.filter(pl.col("arm") == "control")["ctr"][0]
    )
    assert treatment["srm_p_value"] is not None
