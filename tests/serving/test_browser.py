"""The recommendations page in a real headless Chromium, driven over the DevTools protocol."""

from __future__ import annotations

import json

import pytest
from chromium import CARDS, requires_chromium, served_app

from recsys_serving import redis_layout as L

pytestmark = [pytest.mark.browser, requires_chromium]


@pytest.fixture
def live_service(r, redis_url, prefix, bundle):
    L.publish_bundle(r, bundle, prefix)
    with served_app(redis_url, prefix) as base:
        yield base


def test_submit_a_user_and_see_the_cards(live_service, chromium):
    chromium.load(f"location.href = {json.dumps(live_service + '/')}")
    assert chromium.js("document.querySelectorAll('.card').length") == 0
    assert chromium.js("document.title") == "recsys"

    # type a user id into the form and submit it, as a person would
    chromium.load(
        "document.getElementById('user_id').value = '100';"
        "document.getElementById('submit').click();"
    )
    assert chromium.js("location.search") == "?user_id=100&model="
    assert chromium.js(CARDS) == [10, 20, 30, 40]
    assert chromium.js("document.getElementById('source').textContent") == "personal"
    assert chromium.js("document.querySelectorAll('#history tr').length") == 3  # header + 2
    card = chromium.js("document.querySelector('#cards .card').innerText")
    assert "item 10" in card and "9.99" in card and "0.9000" in card and "als" in card

    # switch the model
    chromium.load(
        "document.getElementById('model').value = 'knn';document.getElementById('submit').click();"
    )
    assert chromium.js(CARDS) == [40, 30, 20, 10]

    # follow the "similar items" link on the card of item 10 (the fourth with knn)
    chromium.load("document.querySelectorAll('#cards a.similar')[3].click()")
    similar = "[...document.querySelectorAll('.similar-card')].map(c => Number(c.dataset.item))"
    assert chromium.js(similar) == [20, 30]
    assert chromium.js("document.getElementById('error')") is None
