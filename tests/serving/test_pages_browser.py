"""Every page of the service in a real headless Chromium, after a real run of the whole graph.

The session's ``pipeline_run`` materialises every asset (``ui_reports`` included) into a
temporary DuckDB file and publishes to a real Redis under its own prefix; the service runs in
its own process on that prefix, and each figure a page shows is compared with the warehouse's
tables. Set ``RECSYS_SCREENSHOTS=<folder>`` to keep a full-page screenshot of each page.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
import redis
from chromium import headless_chromium, requires_chromium, served_app

from recsys_serving.redis_layout import Keys

pytestmark = [pytest.mark.browser, requires_chromium]

EXPERIMENT_REPORTS = ("ab_test_report", "ctr_report", "financial_impact", "ablation_report")
PAGES = {"home": "/", "analytics": "/analytics", "recommendations": "/recommendations",
         "experiments": "/experiments"}  # fmt: skip


@pytest.fixture(scope="module")
def service(pipeline_run):
    settings, _ = pipeline_run
    with served_app(settings.redis_url, settings.redis_prefix) as base:
        yield base


@pytest.fixture(scope="module")
def tab(tmp_path_factory):
    with headless_chromium(tmp_path_factory.mktemp("profile"), window="1280,900") as devtools:
        yield devtools


def visit(tab, base: str, page: str) -> None:
    """Open a page; check the nav, that every chart decoded and nothing came from elsewhere."""
    tab.load(f"location.href = {json.dumps(base + PAGES[page])}")
    assert tab.js("document.getElementById('error')") is None, tab.js("document.body.innerText")
    nav = tab.js("[...document.querySelectorAll('#nav a')].map(a => [a.dataset.page, a.className])")
    assert [k for k, _ in nav] == list(PAGES)
    assert [k for k, cls in nav if cls == "active"] == [page]
    resources = tab.js("performance.getEntriesByType('resource').map(e => e.name)")
    assert all(url.startswith(base + "/") for url in resources), resources
    folder = os.environ.get("RECSYS_SCREENSHOTS")
    if folder:
        height = tab.js("document.documentElement.scrollHeight")
        shot = tab.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1},
        )
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{page}.png").write_bytes(base64.b64decode(shot["data"]))


def charts(tab) -> dict[str, bool]:
    """Every chart image of the page: decoded by the browser (complete, with a width)?"""
    return dict(
        tab.js(
            "[...document.querySelectorAll('img[data-chart]')]"
            ".map(i => [i.dataset.chart, i.complete && i.naturalWidth > 0])"
        )
    )


def value(tab, element_id: str) -> str:
    return tab.js(f"document.getElementById({json.dumps(element_id)}).dataset.value")


def rows(tab, table_id: str) -> list[dict[str, str]]:
    """A published table's body rows as {column key: exact published value} (+ ``_row``)."""
    return tab.js(
        f"[...document.querySelectorAll('#{table_id} tr')].filter(tr => tr.querySelector('td'))"
        ".map(tr => Object.assign({_row: tr.dataset.row || null}, Object.fromEntries("
        "[...tr.querySelectorAll('td[data-key]')].map(td => [td.dataset.key, td.dataset.value]))))"
    )


def by(rows_: list[dict], key: str, column: str, cast=float) -> dict:
    return {r[key]: cast(r[column]) for r in rows_}


def sql(warehouse, query: str) -> list[tuple]:
    return warehouse.sql(query).fetchall()


def test_home_shows_the_data_set_and_the_status(service, tab, warehouse, pipeline_run):
    visit(tab, service, "home")
    events, visitors, items, transactions, days = sql(
        warehouse,
        "select count(*), count(distinct visitorid), count(distinct itemid), "
        "count(distinct transactionid), count(distinct cast(epoch_ms(timestamp) as date)) "
        "from recsys.raw_events",
    )[0]
    assert int(value(tab, "events")) == events
    assert int(value(tab, "visitors")) == visitors
    assert int(value(tab, "items")) == items
    assert int(value(tab, "transactions")) == transactions
    assert int(value(tab, "days")) == days
    assert tab.js("document.getElementById('events').textContent") == f"{events:,}"
    mix = dict(sql(warehouse, "select event, count(*) from recsys.raw_events group by 1"))
    assert by(rows(tab, "event-mix"), "_row", "events", int) == mix

    n, users, sessions = sql(
        warehouse,
        "select count(*), count(distinct user_id), count(distinct session_id) from recsys.splits",
    )[0]
    assert (int(value(tab, "interactions")), int(value(tab, "users"))) == (n, users)
    assert int(value(tab, "sessions")) == sessions
    assert int(value(tab, "dropped")) == events - n
    per_split = dict(sql(warehouse, "select split, count(*) from recsys.splits group by 1"))
    assert by(rows(tab, "splits"), "_row", "events", int) == per_split

    # status: what the serving bundle published, and its models' metrics
    settings, _ = pipeline_run
    client = redis.Redis.from_url(settings.redis_url)
    try:
        current = client.get(Keys(settings.redis_prefix).current).decode()
    finally:
        client.close()
    assert tab.js("document.getElementById('served-version').textContent") == current
    assert tab.js("document.getElementById('redis-status').textContent") == "reachable"
    board = dict(sql(warehouse, "select model, ndcg_at_10 from recsys.leaderboard"))
    assert by(rows(tab, "models"), "_row", "ndcg_at_10") == pytest.approx(board, rel=1e-6)
    assert charts(tab) == {"daily_events": True}


def test_analytics_shows_the_funnel_segments_heatmap_and_rules(service, tab, warehouse):
    visit(tab, service, "analytics")
    funnel = warehouse.sql("select * from recsys.conversion_funnel where scope = 'overall'").pl()
    for column in ("views", "addtocarts", "transactions"):
        assert int(value(tab, f"funnel-{column}")) == funnel[column][0]
    for column in ("view_to_cart", "cart_to_purchase", "view_to_purchase"):
        assert float(value(tab, f"funnel-{column}")) == pytest.approx(funnel[column][0], rel=1e-12)
    categories = dict(
        sql(warehouse, "select key, views from recsys.conversion_funnel where scope = 'category'")
    )
    assert by(rows(tab, "funnel-categories"), "_row", "views", int) == categories

    segments = dict(sql(warehouse, "select segment, count(*) from recsys.rfm_segments group by 1"))
    shown = {k: v for k, v in by(rows(tab, "rfm"), "_row", "users", int).items() if v}
    assert shown == segments

    total = sql(warehouse, "select sum(events) from recsys.activity_heatmap")[0][0]
    assert tab.js("document.body.innerText").count(f"{total:,} events") == 1
    busiest = rows(tab, "busiest")
    top = sql(warehouse, "select max(events) from recsys.activity_heatmap")[0][0]
    assert int(busiest[0]["events"]) == top

    strongest = dict(
        sql(
            warehouse,
            "select basket_type, max(lift) from recsys.association_rules "
            "where algorithm = 'fpgrowth' group by 1",
        )
    )
    rules = rows(tab, "rules")
    firsts = {}
    for r in rules:  # sorted by lift within each basket type
        firsts.setdefault(r["basket_type"], float(r["lift"]))
    assert firsts == pytest.approx(strongest, rel=1e-12)
    assert charts(tab) == {"funnel": True, "rfm_segments": True, "heatmap": True}


def test_recommendations_page_from_the_nav(service, tab, warehouse):
    visit(tab, service, "home")
    tab.load("document.querySelector('#nav a[data-page=recommendations]').click()")
    user = sql(warehouse, "select min(user_id) from recsys.eval_recommendations")[0][0]
    tab.load(
        f"document.getElementById('user_id').value = '{user}';"
        "document.getElementById('submit').click();"
    )
    assert (
        tab.js("location.pathname + location.search")
        == f"/recommendations?user_id={user}&model=&category="
    )
    assert tab.js("document.querySelectorAll('#cards .card').length") > 0
    assert tab.js("document.getElementById('source').textContent") == "personal"


def test_experiments_shows_every_report_as_the_warehouse_has_it(service, tab, warehouse):
    visit(tab, service, "experiments")
    board = warehouse.sql("select * from recsys.leaderboard order by ndcg_at_10 desc").pl()
    shown = rows(tab, "leaderboard")
    assert [r["_row"] for r in shown] == board["model"].to_list()
    for metric in ("ndcg_at_10", "hit_rate_at_10"):
        assert by(shown, "_row", metric) == dict(board.select("model", metric).rows())
    assert tab.js("document.getElementById('champion').textContent") == board["model"][0]

    tables = {t for (t,) in sql(warehouse, "select table_name from duckdb_tables()")}
    missing = [name for name in EXPERIMENT_REPORTS if name not in tables]
    assert tab.js("[...document.querySelectorAll('[data-report]')].map(e => e.dataset.report)") == (
        missing
    )
    expected_charts = {"leaderboard"}

    if "ab_test_report" in tables:
        ab = sql(warehouse, "select comparison, metric, paired_lift from recsys.ab_test_report")
        shown = rows(tab, "ab-results")
        assert len(shown) == len(ab)
        got = {(r["comparison"], r["metric"]): float(r["paired_lift"]) for r in shown}
        assert got == pytest.approx({(c, m): v for c, m, v in ab}, rel=1e-12)
        expected_charts.add("ab_lifts")
    if "ctr_report" in tables:
        ctr = dict(
            sql(warehouse, "select model, ctr from recsys.ctr_report where breakdown = 'overall'")
        )
        assert by(rows(tab, "ctr"), "_row", "ctr") == pytest.approx(ctr, rel=1e-12)
        expected_charts.add("ctr_by_position")
    if "financial_impact" in tables:
        money = dict(
            sql(warehouse, "select model, revenue_per_1000_users from recsys.financial_impact")
        )
        shown = by(rows(tab, "money"), "_row", "revenue_per_1000_users")
        assert shown == pytest.approx(money, rel=1e-12)
        assert "attribution window" in tab.js("document.getElementById('assumptions').innerText")
        expected_charts.add("revenue")
    if "ablation_report" in tables:
        ablation = sql(warehouse, "select model, variant, ndcg_at_10 from recsys.ablation_report")
        shown = {(r["model"], r["variant"]): r["ndcg_at_10"] for r in rows(tab, "ablation")}
        assert len(shown) == len(ablation)
        assert shown == {(m, v): (repr(x) if x is not None else "") for m, v, x in ablation}
        expected_charts.add("ablation")
    assert charts(tab) == dict.fromkeys(expected_charts, True)
