"""Redis down or hung: fast 503s, a degraded health, recovery without restart; a light import."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import redis as redis_lib
from litestar.testing import TestClient

from recsys_devtools.redis_server import RedisServer, free_port
from recsys_serving import redis_layout as L
from recsys_serving.app import create_app
from recsys_serving.settings import Settings


def timed(call):
    start = time.perf_counter()
    resp = call()
    return resp, time.perf_counter() - start


def test_redis_unreachable_gives_fast_503_and_degraded_health():
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", prefix="nothing")
    with TestClient(create_app(settings)) as c:
        resp, took = timed(lambda: c.post("/api/v1/recommend", json={"user_id": 1}))
        assert resp.status_code == 503 and "Redis unavailable" in resp.text and took < 1.0
        resp, took = timed(lambda: c.get("/api/v1/health"))
        assert resp.status_code == 503 and took < 1.0
        assert resp.json()["status"] == "degraded" and resp.json()["redis"] is False
        for url in ("/api/v1/models", "/api/v1/popular", "/api/v1/users/1/history"):
            assert c.get(url).status_code == 503
        resp = c.get("/?user_id=1")
        assert resp.status_code == 503 and "Redis is unavailable" in resp.text
        assert c.get("/api/v1/cache/stats").json()["redis_used_memory"] is None


def test_nothing_published_is_503_not_500(redis_url, prefix):
    with TestClient(create_app(Settings(redis_url=redis_url, prefix=prefix))) as c:
        resp = c.post("/api/v1/recommend", json={"user_id": 1})
        assert resp.status_code == 503 and "nothing published" in resp.text
        health = c.get("/api/v1/health")
        assert health.status_code == 503 and health.json()["redis"] is True


def test_hung_redis_times_out_then_service_recovers(bundle):
    """SIGSTOP freezes the server (connections accepted, no answers); SIGCONT brings it back."""
    with RedisServer() as server:
        L.publish_bundle(redis_lib.Redis.from_url(server.url), bundle, "hang")
        settings = Settings(redis_url=server.url, prefix="hang", state_ttl=0.0)
        with TestClient(create_app(settings)) as c:
            assert c.post("/api/v1/recommend", json={"user_id": 100}).status_code == 200
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                resp, took = timed(lambda: c.post("/api/v1/recommend", json={"user_id": 200}))
                assert resp.status_code == 503 and took < 1.5, (resp.status_code, took)
                resp, took = timed(lambda: c.get("/api/v1/health"))
                assert resp.json()["status"] == "degraded" and took < 1.5
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            deadline = time.monotonic() + 5
            status = None
            while time.monotonic() < deadline and status != 200:
                status = c.post("/api/v1/recommend", json={"user_id": 200}).status_code
                time.sleep(0.05)
            assert status == 200
            assert c.get("/api/v1/health").json()["status"] == "ok"


def test_restarted_redis_is_picked_up(bundle):
    """Redis killed and started again on the same port: the same app serves again."""
    port = free_port()
    server = RedisServer(port).start()
    try:
        L.publish_bundle(redis_lib.Redis.from_url(server.url), bundle, "restart")
        with TestClient(create_app(Settings(redis_url=server.url, prefix="restart"))) as c:
            assert c.post("/api/v1/recommend", json={"user_id": 100}).status_code == 200
            server.stop()
            assert c.post("/api/v1/recommend", json={"user_id": 300}).status_code == 503
            server = RedisServer(port).start()
            L.publish_bundle(redis_lib.Redis.from_url(server.url), bundle, "restart")
            deadline = time.monotonic() + 5
            status = None
            while time.monotonic() < deadline and status != 200:
                status = c.post("/api/v1/recommend", json={"user_id": 300}).status_code
                time.sleep(0.05)
            assert status == 200
    finally:
        server.stop()


def test_service_imports_neither_dagster_nor_torch():
    """Every module of the service, imported in a fresh interpreter, pulls in none of these."""
    code = (
        "import importlib, pkgutil, sys, recsys_serving;"
        "[importlib.import_module(m.name) for m in"
        " pkgutil.walk_packages(recsys_serving.__path__, 'recsys_serving.')];"
        "bad = [m for m in ('dagster', 'torch', 'polars', 'recsys_devtools') if m in sys.modules];"
        "print(len(sys.modules), bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_redis_server_cli_prints_a_url_it_serves():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsys_devtools.redis_server", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url == f"redis://127.0.0.1:{port}/0"
        assert redis_lib.Redis.from_url(url).ping()
    finally:
        proc.terminate()
        proc.wait(10)


def test_detached_redis_server_outlives_its_starter(tmp_path):
    server = RedisServer(free_port(), tmp_path / "redis")
    pid = server.start_detached()
    client = redis_lib.Redis.from_url(server.url)
    try:
        assert client.ping() and pid > 0
        assert (tmp_path / "redis" / "redis.pid").exists()
    finally:
        client.shutdown(nosave=True)
