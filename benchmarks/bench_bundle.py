"""The serving bundle (the publish step): per-model precompute cost, what the time caps cut.

    python benchmarks/bench_bundle.py [--data /tmp/gen10] [--models popular,als,...]
        [--epochs 1] [--uncapped] [--max-seconds S] [--max-similar-seconds S] [--redis URL]

Fits each model on train+valid as the ``trained_model`` asset does (data built like
``bench_torch_models.py`` / ``bench_hybrid.py``), then builds the bundle exactly as the
``serving_bundle`` asset does (``build_bundle``, the default ``BundleLimits`` unless told) and
prints, per model: the users it was trained on, those given a precomputed list, those cut by the
time cap, and the seconds for lists / neighbour lists / in all; then the shared parts (history,
popularity, items) and, with ``--redis``, the write to Redis (under a throw-away prefix, deleted
afterwards).

Scoring cost hardly depends on how long a model trained, so the torch models (NCF, GRU4Rec and
the Hybrid's copies of them) train ``--epochs`` epochs (default 1) and ALS in the Hybrid its
default; at scale 1.0 the fits took 6 min for ALS, NCF, GRU4Rec and 7 min for the Hybrid (every
source twice, then the trees) under a load of 3.5, once: they are cached.

Fitted models are kept in ``--cache`` (per data folder and epochs) so that a rerun with other
limits measures only the bundle. The machine is shared: the load average is printed before and
after, with CPU seconds of this process beside the wall-clock total.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from generated_frames import load_generated  # noqa: E402

from recsys_assets.core.data.training_data import build_training_data  # noqa: E402
from recsys_assets.core.models.registry import (  # noqa: E402
    MODEL_REGISTRY,
    create_model,
    model_from_bytes,
)
from recsys_assets.core.serving_bundle import BundleLimits, PublishedModel, build_bundle  # noqa: E402

FINAL = ("train", "valid")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def quick_params(name: str, epochs: int) -> dict:
    """Fewer epochs for the torch models (and the Hybrid's own copies of them)."""
    torch = {"n_epochs": epochs}
    if name in ("ncf", "gru4rec"):
        return dict(torch)
    if name == "hybrid":
        return {"source_params": {"als": {"iterations": 6}, "gru4rec": torch, "ncf": torch}}
    return {}


def fitted(name: str, data, epochs: int, cache: Path | None):
    path = cache / f"{name}-e{epochs}.bin" if cache else None
    if path is not None and path.exists():
        return model_from_bytes(name, path.read_bytes()), 0.0
    clock = time.perf_counter()
    model = create_model(name, quick_params(name, epochs)).fit(data)
    seconds = time.perf_counter() - clock
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(model.to_bytes())
    return model, seconds


def publish(url: str, bundle) -> tuple[float, int]:
    """(seconds, payload bytes) of writing the bundle to Redis under a fresh prefix."""
    import redis

    from recsys_serving.redis_layout import delete_prefix, publish_bundle

    client = redis.Redis.from_url(url)
    prefix = f"bench-bundle-{uuid.uuid4().hex[:8]}"
    try:
        report = publish_bundle(client, bundle, prefix=prefix)
        return report.seconds, report.payload_bytes
    finally:
        delete_prefix(client, prefix)
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/gen05"))
    parser.add_argument("--models", default=",".join(MODEL_REGISTRY))
    parser.add_argument("--epochs", type=int, default=1, help="torch models' training epochs")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bench_bundle_models"))
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--uncapped", action="store_true", help="no time caps (the old bundle)")
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument("--max-similar-seconds", type=float, default=None)
    parser.add_argument("--max-users", type=int, default=None)
    parser.add_argument("--redis", default="", help="also time the write to this Redis URL")
    parser.add_argument("--verbose", action="store_true", help="show the bundle's log lines")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)

    limits = BundleLimits()
    if args.uncapped:
        limits = dataclasses.replace(
            limits, max_seconds_per_model=None, max_similar_seconds_per_model=None
        )
    for field, value in (
        ("max_seconds_per_model", args.max_seconds),
        ("max_similar_seconds_per_model", args.max_similar_seconds),
        ("max_users", args.max_users),
    ):
        if value is not None:
            limits = dataclasses.replace(limits, **{field: value})

    clock = time.perf_counter()
    splits, catalog, tree = load_generated(args.data)
    data = build_training_data(splits, catalog, tree, use_splits=FINAL)
    print(
        f"{args.data}: {splits.height:,} events, {data.n_users:,} train+valid users, "
        f"{data.n_items:,} items; loaded in {time.perf_counter() - clock:.0f}s (load {load()})"
    )
    cache = (
        None
        if args.no_cache
        else args.cache / str(args.data.resolve()).strip("/").replace("/", "_")
    )
    models = {}
    for name in args.models.split(","):
        model, seconds = fitted(name, data, args.epochs, cache)
        note = f"fitted in {seconds:.0f}s" if seconds else f"loaded from {cache}"
        print(f"  {name}: {note} (load {load()})")
        models[name] = PublishedModel(model, 1, "bench", {}, {})

    print(f"\nbundle limits: {limits}\nload before: {load()}")
    clock, cpu = time.perf_counter(), time.process_time()
    built = build_bundle(models, splits, catalog, next(iter(models)), limits=limits)
    wall, cpu = time.perf_counter() - clock, time.process_time() - cpu
    print(f"load after: {load()}\n")

    row = "{:14s} {:>10} {:>12} {:>9} {:>8} {:>11} {:>7} {:>7} {:>8} {:>8}"
    print(
        row.format(
            "model",
            "known",
            "precomputed",
            "cut",
            "lists s",
            "neighbours",
            "cut",
            "nbr s",
            "total s",
            "CPU s",
        )
    )
    for c in built.costs:
        print(
            row.format(
                c.model,
                f"{c.known_users:,}",
                f"{c.users:,}",
                f"{c.users_cut:,}",
                f"{c.list_seconds:.1f}",
                f"{c.similar_items:,}",
                f"{c.similar_cut:,}",
                f"{c.similar_seconds:.1f}",
                f"{c.seconds:.1f}",
                f"{c.cpu_seconds:.1f}",
            )
        )
    print(
        row.format(
            "all models",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            f"{sum(c.seconds for c in built.costs):.1f}",
            f"{sum(c.cpu_seconds for c in built.costs):.1f}",
        )
    )
    for part, seconds in built.shared_seconds.items():
        print(f"{part:24s} {seconds:6.1f} s")
    print(f"bundle built in {wall:.1f} s wall, {cpu:.1f} s CPU")
    if args.redis:
        seconds, payload = publish(args.redis, built.bundle)
        print(f"Redis write {seconds:.1f} s ({payload / 2**20:.0f} MiB)")
        print(f"bundle + Redis write {wall + seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
