"""Headless Debian Chromium driven over the DevTools protocol, shared by the browser tests.

No browser download and no webdriver: Chromium prints its DevTools websocket on stderr, and the
few protocol calls the tests need (evaluate, navigate, screenshot) go over that socket.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# the item ids of the service page's recommendation cards, in order
CARDS = "[...document.querySelectorAll('#cards .card')].map(c => Number(c.dataset.item))"
requires_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed"
)


class DevTools:
    """Just enough of the Chrome DevTools protocol: calls, evaluation, waiting for a page."""

    def __init__(self, ws_url: str, timeout: float = 30.0):
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None, open_timeout=10)
        self.timeout = timeout
        self.next_id = 0
        self.pending: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        ident = self.next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=self.timeout))
            if msg.get("id") == ident:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.pending.append(msg)  # an event that arrived first: kept for wait_for

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def wait_js(self, expression: str, timeout: float = 30.0, what: str = ""):
        """Poll ``expression`` until it is truthy: React pages render after the load event."""
        deadline = time.monotonic() + timeout
        while not (value := self.js(expression)):
            assert time.monotonic() < deadline, f"not seen in {timeout} s: {what or expression}"
            time.sleep(0.1)
        return value

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

    def load(self, action: str) -> None:
        """Run ``action`` (JavaScript that navigates) and wait until the new page has loaded."""
        self.pending.clear()
        self.js(action)
        self.wait_for("Page.loadEventFired")

    def close(self) -> None:
        self.ws.close()


@contextmanager
def headless_chromium(profile: Path, window: str = "1280,900") -> Iterator[DevTools]:
    """Start Chromium with an empty profile and yield a DevTools session on its first tab."""
    proc = subprocess.Popen(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", f"--window-size={window}", "about:blank"],
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
        try:
            yield tab
        finally:
            tab.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_http(url: str, timeout: float = 30.0) -> None:
    """Block until ``url`` answers 200 (a server started in a subprocess is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in {timeout} s")


@contextmanager
def served_app(redis_url: str, prefix: str) -> Iterator[str]:
    """The real service under uvicorn on a free loopback port, reading ``prefix`` in Redis."""
    import os
    import sys

    from recsys_devtools.redis_server import free_port

    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "RECSYS_REDIS_PREFIX": prefix}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "recsys_serving.app:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/api/v1/health")
        yield base
    finally:
        proc.terminate()
        proc.wait(10)
