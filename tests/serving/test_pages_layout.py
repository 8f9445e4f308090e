"""The pages' reports in Redis: one hash per publish behind a pointer, read by the service.

A hand-made publish (small documents, real PNGs) is enough here: the browser test
(``test_pages_browser.py``) checks the real graph's pages against the warehouse.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from litestar.testing import TestClient
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from recsys_serving import redis_layout as L
from recsys_serving.app import create_app
from recsys_serving.pages import format_value
from recsys_serving.redis_layout.pages import PagesReader, publish_pages
from recsys_serving.settings import Settings


def png(value: float) -> bytes:
    fig = Figure(figsize=(2, 1), dpi=50)
    FigureCanvasAgg(fig)
    fig.subplots().bar([0], [value])
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def documents(events: int) -> dict[str, dict]:
    table = {
        "columns": [{"key": "model", "label": "model", "format": "text"},
                    {"key": "ndcg_at_10", "label": "NDCG@10", "format": "float"}],
        "rows": [{"model": "als", "ndcg_at_10": 0.123456789},
                 {"model": "popular", "ndcg_at_10": None}],
        "row_key": "model",
    }  # fmt: skip
    return {
        "home": {
            "dataset": {
                "events": events,
                "visitors": 7,
                "items": 3,
                "transactions": 1,
                "first_day": "2015-05-03",
                "last_day": "2015-05-04",
                "days": 2,
            },
            "event_mix": {"columns": [], "rows": [], "row_key": None},
            "cleaned": {
                "interactions": events,
                "users": 7,
                "items": 3,
                "sessions": 4,
                "dropped_events": 0,
            },
            "splits": {"columns": [], "rows": [], "row_key": None},
            "charts": {"daily_events": "Events per day"},
        },  # fmt: skip
        "analytics": {},
        "experiments": {
            "champion": "als",
            "leaderboard": table,
            "missing": ["ablation_report"],
            "charts": {"leaderboard": "NDCG@10"},
        },
    }


@pytest.fixture
def client(redis_url, prefix, r, bundle):
    L.publish_bundle(r, bundle, prefix)
    settings = Settings(redis_url=redis_url, prefix=prefix, listen_pubsub=False)
    with TestClient(create_app(settings)) as c:
        yield c


def test_publish_switches_the_pointer_and_keeps_only_the_previous(r, prefix):
    keys = L.Keys(prefix)
    first = publish_pages(r, documents(10), {"daily_events": png(1)}, prefix)
    assert (first.publish, first.previous) == (1, None)
    second = publish_pages(r, documents(20), {"daily_events": png(2)}, prefix)
    assert (second.publish, second.previous, second.deleted) == (2, 1, [])
    third = publish_pages(r, documents(30), {"daily_events": png(3)}, prefix)
    assert (third.publish, third.previous, third.deleted) == (3, 2, [1])
    assert r.get(keys.pages_current) == b"3"
    assert not r.exists(keys.pages(1)) and r.exists(keys.pages(2))
    doc = json.loads(r.hget(keys.pages(3), "doc:home"))
    assert doc["dataset"]["events"] == 30 and doc["publish"] == 3
    assert doc["published_at"] == third.published_at
    assert r.hget(keys.pages(3), "chart:daily_events") == png(3)
    # the serving versions' cleanup never touches the pages (they are not under {p}:v:)
    assert L.delete_stale_versions(r, prefix) == [] and r.exists(keys.pages(3))


def test_a_publish_is_one_hash_written_by_one_command(r, prefix):
    """The whole publish is one HSET: a reader sees all of it or none of it."""
    commands = []

    class Recording:
        def __getattr__(self, name):
            attr = getattr(r, name)
            if callable(attr):
                commands.append(name)
            return attr

    publish_pages(Recording(), documents(1), {"daily_events": png(1)}, prefix)
    assert commands[:2] == ["incr", "hset"]  # then the pointer, then the cleanup


@pytest.mark.parametrize(
    "docs, charts, message",
    [
        ({"home": {}, "analytics": {}}, {}, "missing ['experiments']"),
        ({**documents(1), "admin": {}}, {}, "unknown ['admin']"),
        ({**documents(1), "home": [1]}, {}, "document 'home' is a list"),
        (documents(1), {"Bad Name": png(1)}, "chart name 'Bad Name'"),
        (documents(1), {"chart": b"<svg/>"}, "chart 'chart' is not a PNG image"),
    ],
)
def test_bad_publishes_are_refused_before_anything_is_written(r, prefix, docs, charts, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        publish_pages(r, docs, charts, prefix)
    assert list(r.scan_iter(match=f"{prefix}:*")) == []


def test_nan_is_published_as_null_not_as_invalid_json(r, prefix):
    docs = documents(1)
    docs["experiments"]["leaderboard"]["rows"][0]["ndcg_at_10"] = float("nan")
    docs["home"]["dataset"]["events"] = np.int64(5)
    publish_pages(r, docs, {}, prefix)
    raw = r.hget(L.Keys(prefix).pages(1), "doc:experiments")
    assert json.loads(raw)["leaderboard"]["rows"][0]["ndcg_at_10"] is None
    assert json.loads(r.hget(L.Keys(prefix).pages(1), "doc:home"))["dataset"]["events"] == 5


def test_reader_reads_documents_and_charts(redis_url, prefix, r):
    from redis.asyncio import Redis

    publish_pages(r, documents(10), {"daily_events": png(1)}, prefix)

    async def reads():
        client = Redis.from_url(redis_url)
        try:
            reader = PagesReader(client, prefix)
            assert await reader.current() == 1
            assert (await reader.document(1, "home"))["dataset"]["events"] == 10
            assert await reader.document(1, "nope") is None
            assert await reader.chart(1, "daily_events") == png(1)
            assert await reader.chart(1, "../../etc") is None  # names checked, not looked up
        finally:
            await client.aclose()

    asyncio.run(reads())


def test_pages_say_not_published_before_the_graph_publishes_them(client):
    for path in ("/", "/analytics", "/experiments"):
        resp = client.get(path)
        assert resp.status_code == 200, path
        assert "has not published the reports of this page" in resp.text
        assert 'href="/analytics"' in resp.text and 'href="/recommendations"' in resp.text
    assert "reachable" in client.get("/").text  # the status part needs no reports


def test_pages_show_the_published_documents_and_serve_their_charts(client, r, prefix):
    publish_pages(r, documents(12345), {"daily_events": png(1), "leaderboard": png(2)}, prefix)
    html = client.get("/").text
    assert 'id="events" data-value="12345">12,345<' in html
    assert 'src="/pages/charts/1/daily_events.png"' in html
    html = client.get("/experiments").text
    assert 'data-row="als"' in html and 'data-value="0.123456789">0.1235<' in html
    assert 'data-key="ndcg_at_10" data-value="">—<' in html  # a missing value, not "None"
    assert 'data-report="ablation_report"' in html
    assert "<script" not in html and "http://" not in html and "https://" not in html
    resp = client.get("/pages/charts/1/leaderboard.png")
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    assert resp.content == png(2)
    assert client.get("/pages/charts/1/nope.png").status_code == 404
    assert client.get("/pages/charts/9/leaderboard.png").status_code == 404

    # a new publish is shown at once; the previous publish's charts stay until the next
    publish_pages(r, documents(777), {"daily_events": png(3)}, prefix)
    assert 'data-value="777"' in client.get("/").text
    assert client.get("/pages/charts/1/leaderboard.png").status_code == 200


def test_pages_are_not_part_of_the_api_schema(client):
    paths = set(client.get("/schema/openapi.json").json()["paths"])
    assert not {"/", "/analytics", "/experiments", "/recommendations"} & paths
    assert not any(p.startswith("/pages") for p in paths)


def test_redis_down_gives_a_503_page_naming_it(prefix):
    settings = Settings(redis_url="redis://127.0.0.1:1/0", prefix=prefix, listen_pubsub=False)
    with TestClient(create_app(settings)) as c:
        for path in ("/analytics", "/experiments", "/"):
            resp = c.get(path)
            assert resp.status_code == 503 and "Redis is unavailable" in resp.text, path


@pytest.mark.parametrize(
    "value, fmt, shown",
    [
        (1234567, "int", "1,234,567"),
        (0.123456, "float", "0.1235"),
        (0.0292, "pct", "2.92 %"),
        (0.325, "pct", "32.5 %"),
        (-0.00001, "pct", "0.00 %"),
        (1.8512, "ratio", "1.85×"),
        (-0.001, "money", "0.00"),
        (4474.58, "money", "4,474.58"),
        (0.0004, "p", "< 0.001"),
        (0.0421, "p", "0.042"),
        (29.84, "seconds", "29.8 s"),
        (True, "bool", "yes"),
        (None, "float", "—"),
        (float("nan"), "pct", "—"),
        ("n/a", "int", "n/a"),
    ],
)
def test_format_value(value, fmt, shown):
    assert format_value(value, fmt) == shown


def test_the_service_with_its_pages_imports_no_graph_code():
    """The pages render published documents: the service still loads neither Dagster, DuckDB,
    torch, polars nor matplotlib (the charts are PNGs made by the graph)."""
    code = (
        "import importlib, pkgutil, sys, recsys_serving;"
        "[importlib.import_module(m.name) for m in"
        " pkgutil.walk_packages(recsys_serving.__path__, 'recsys_serving.')];"
        "import recsys_serving.app;"
        "bad = [m for m in ('dagster', 'duckdb', 'torch', 'polars', 'matplotlib')"
        " if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
