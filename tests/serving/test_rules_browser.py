"""The recommendations page's rules in a real headless Chromium: unavailable items are left out
until "show unavailable" is ticked, and the category filter keeps the cards in that category.
Set ``RECSYS_SCREENSHOTS=<folder>`` to keep the screenshots (a test's tmp folder otherwise)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from chromium import CARDS, requires_chromium, served_app

from recsys_serving import redis_layout as L

pytestmark = [pytest.mark.browser, requires_chromium]


@pytest.fixture
def live_service(r, redis_url, prefix, make_bundle):
    # item 20, second in user 100's list, is published unavailable
    L.publish_bundle(r, make_bundle(unavailable=(20,)), prefix)
    with served_app(redis_url, prefix) as base:
        yield base


def screenshot(tab, path: Path) -> Path:
    folder = os.environ.get("RECSYS_SCREENSHOTS")
    if folder:
        path = Path(folder) / path.name
        path.parent.mkdir(parents=True, exist_ok=True)
    shot = tab.call("Page.captureScreenshot", format="png")
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def test_show_unavailable_and_the_category_filter(live_service, chromium, tmp_path):
    chromium.load(f"location.href = {json.dumps(live_service + '/recommendations?user_id=100')}")
    assert chromium.js("document.getElementById('show_unavailable').checked") is False
    assert chromium.js(CARDS) == [10, 30, 40, 50, 60]  # 20 left out; popular 50, 60 top up
    assert "unavailable 1" in chromium.js("document.getElementById('filtering').textContent")
    assert chromium.js("document.querySelectorAll('.card.unavailable').length") == 0
    # the category filter offers every category of the served tree (4 is the parent of 1, 2)
    options = chromium.js("[...document.querySelectorAll('#category option')].map(o => o.value)")
    assert options == ["", "1", "2", "3", "4"]
    screenshot(chromium, tmp_path / "rules_default.png")

    # tick "show unavailable", as a person would
    chromium.load(
        "document.getElementById('show_unavailable').click();"
        "document.getElementById('submit').click();"
    )
    assert "show_unavailable=1" in chromium.js("location.search")
    assert chromium.js(CARDS) == [10, 20, 30, 40]
    unavailable = chromium.js("[...document.querySelectorAll('.card.unavailable')]"
                              ".map(c => [Number(c.dataset.item), c.innerText])")  # fmt: skip
    assert [i for i, _ in unavailable] == [20] and "unavailable" in unavailable[0][1]
    screenshot(chromium, tmp_path / "rules_show_unavailable.png")

    # category 2, checkbox still ticked (the form keeps its state)
    chromium.load(
        "document.getElementById('category').value = '2';document.getElementById('submit').click();"
    )
    assert chromium.js("document.getElementById('show_unavailable').checked") is True
    assert chromium.js(CARDS) == [30, 40]
    # category 4 (a parent): its children's items, 20 out again once unticked
    chromium.load(
        "document.getElementById('category').value = '4';"
        "document.getElementById('show_unavailable').click();"
        "document.getElementById('submit').click();"
    )
    assert chromium.js(CARDS) == [10, 30, 40]
    # the card links keep the filters
    href = chromium.js("document.querySelector('#cards a.similar').getAttribute('href')")
    assert "category=4" in href and "show_unavailable" not in href
    screenshot(chromium, tmp_path / "rules_category.png")
    assert chromium.js("document.getElementById('error')") is None
