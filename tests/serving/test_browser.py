"""The recommendations page in a real headless Chromium, driven over the DevTools protocol."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from recsys_devtools.redis_server import free_port
from recsys_serving import redis_layout as L

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]


class DevTools:
    """Just enough of the Chrome DevTools protocol: calls and waiting for one event."""

    def __init__(self, ws_url: str):
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None, open_timeout=10)
        self.next_id = 0
        self.pending: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        ident = self.next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=15))
            if msg.get("id") == ident:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.pending.append(msg)

    def wait_for(self, event: str, timeout: float = 15.0) -> dict:
        for i, msg in enumerate(self.pending):
            if msg.get("method") == event:
                del self.pending[: i + 1]
                return msg
        self.pending.clear()
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if msg.get("method") == event:
                return msg

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def load(self, action: str) -> None:
        """Run ``action`` (JavaScript that navigates) and wait until the new page has loaded."""
        self.pending.clear()
        self.js(action)
        self.wait_for("Page.loadEventFired")

    def close(self) -> None:
        self.ws.close()


def _wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in {timeout} s")


@pytest.fixture
def live_service(r, redis_url, prefix, bundle):
    L.publish_bundle(r, bundle, prefix)
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "RECSYS_REDIS_PREFIX": prefix}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "recsys_serving.app:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{base}/api/v1/health")
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def chromium(tmp_path):
    proc = subprocess.Popen(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
         "--remote-debugging-port=0", "--window-size=1280,900", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    found: list[str] = []
    ready = threading.Event()

    def read_stderr():  # Chromium announces its DevTools port on stderr
        for line in proc.stderr:
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m and not found:
                found.append(m.group(1))
                ready.set()

    threading.Thread(target=read_stderr, daemon=True).start()
    try:
        assert ready.wait(30), "chromium did not start its DevTools endpoint"
        port = re.search(r"ws://[^:/]+:(\d+)/", found[0]).group(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as resp:
            pages = [t for t in json.load(resp) if t["type"] == "page"]
        tab = DevTools(pages[0]["webSocketDebuggerUrl"])
        tab.call("Page.enable")
        yield tab
        tab.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


CARDS = "[...document.querySelectorAll('#cards .card')].map(c => Number(c.dataset.item))"


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
