"""Models + publishing benchmark: every model asset and the Redis publish, timed one by one.

    python benchmarks/bench_foundation.py --scale 1.0        # prints its work dir
    python benchmarks/bench_pipeline.py --work-dir /tmp/recsys-bench-XXXX [--tune]

Reuses the warehouse the foundation benchmark left (tables and analytics already built), then
materialises per model ``trained_model`` (defaults; ``--tune`` adds the Optuna stage),
``eval_recommendations`` and ``model_metrics`` — each its own in-process Dagster run — then
``session_metrics``, ``leaderboard`` and ``serving_bundle`` into Redis (``REDIS_URL``, else
127.0.0.1:6379, under a throw-away prefix that is deleted afterwards). Prints seconds per asset,
the leaderboard, the Redis memory of the published version and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import uuid
from dataclasses import replace
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--models", nargs="*", default=None)
    args = parser.parse_args()

    import duckdb
    import polars as pl
    import redis
    from dagster import DagsterInstance

    from recsys_assets.definitions import build_definitions
    from recsys_assets.partitions import model_partitions
    from recsys_assets.pipeline import run_stage, stage_of
    from recsys_assets.settings import Settings
    from recsys_assets.terminal import quiet_libraries
    from recsys_serving.redis_layout import delete_prefix

    quiet_libraries()
    prefix = f"recsys-bench-{uuid.uuid4().hex[:6]}"
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    settings = replace(
        Settings.from_env(),
        data_dir=args.work_dir,
        raw_dir=args.work_dir / "raw",
        duckdb_path=args.work_dir / "warehouse.duckdb",
        mlflow_tracking_uri=f"sqlite:///{args.work_dir / 'mlflow.db'}",
        redis_url=url,
        redis_prefix=prefix,
    )
    defs = build_definitions(settings)
    models = args.models or model_partitions.get_partition_keys()
    per_model = ["tuned_params"] if args.tune else []
    per_model += ["trained_model", "eval_recommendations", "model_metrics"]
    rows: list[tuple[str, float]] = []
    client = redis.Redis.from_url(url)
    try:
        with DagsterInstance.ephemeral() as instance:
            for model in models:
                for asset in per_model:
                    seconds = run_stage(defs, instance, stage_of(defs, asset), [model])
                    rows.append((f"{model}: {asset}", seconds))
            for asset in ("session_metrics", "leaderboard", "serving_bundle"):
                rows.append((asset, run_stage(defs, instance, stage_of(defs, asset))))
        used = client.info("memory")["used_memory"]
    finally:
        delete_prefix(client, prefix)

    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        board = pl.from_arrow(con.sql("select * from recsys.leaderboard").arrow())
        bundle = pl.from_arrow(con.sql("select * from recsys.serving_bundle").arrow())
    width = max(len(n) for n, _ in rows)
    print(f"\n{'asset'.ljust(width)} | seconds")
    print(f"{'-' * width}-|--------")
    for name, seconds in rows:
        print(f"{name.ljust(width)} | {seconds:7.2f}")
    with pl.Config(tbl_rows=20, tbl_cols=20, float_precision=4, tbl_width_chars=200):
        print(
            board.select(
                "model", "precision_at_10", "recall_at_10", "ndcg_at_10", "hit_rate_at_10",
                "mrr_at_10", "coverage_at_20", "users_evaluated", "train_seconds",
            )
        )  # fmt: skip
        print(bundle.drop("models"))
    print(f"Redis used_memory with the version published: {used / 2**20:.1f} MiB")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"peak RSS: {peak:.2f} GB")


if __name__ == "__main__":
    main()
