"""Ablation report benchmark: seconds of the ``ablation_report`` asset at a given scale.

    python benchmarks/bench_ablation.py --scale 0.05                  # default (cheap) variants
    python benchmarks/bench_ablation.py --scale 0.05 --tiers default slow --repeat 1
    python benchmarks/bench_ablation.py --scale 0.05 --complete --repeat 1

Generates the data (seed 7, as the tests) into a temporary work dir, builds the tables the
asset reads (raw events → splits, catalogue, category tree) through the real Dagster assets, then
materialises ``ablation_report`` alone ``--repeat`` times and prints each run's seconds, their
median, and the report (its summary columns).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--tiers", nargs="*", default=["default"])
    parser.add_argument("--complete", action="store_true")
    parser.add_argument("--max-users", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import duckdb
    import polars as pl
    from dagster import AssetKey, DagsterInstance

    from recsys_assets.core.experiments.ablation import summary_table
    from recsys_assets.core.generator import GeneratorConfig, generate_dataset
    from recsys_assets.definitions import build_definitions
    from recsys_assets.partitions import register_event_days
    from recsys_assets.pipeline import run_stage, stage_of
    from recsys_assets.settings import Settings
    from recsys_assets.terminal import quiet_libraries

    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="recsys-ablation-"))
    generate_dataset(work / "raw", GeneratorConfig(scale=args.scale, seed=7))
    settings = replace(
        Settings.from_env(),
        data_dir=work,
        raw_dir=work / "raw",
        raw_dir_is_default=False,
        duckdb_path=work / "warehouse.duckdb",
        mlflow_tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
    )
    defs = build_definitions(settings)
    config = {
        "tiers": args.tiers,
        "complete": args.complete,
        "max_users": args.max_users,
    }
    run_config = {"ops": {"ablation_report": {"config": config}}}
    with DagsterInstance.ephemeral() as instance:
        register_event_days(instance, defs.resources["source"])
        run_stage(defs, instance, stage_of(defs, "raw_events"))
        run_stage(defs, instance, stage_of(defs, "category_tree", "item_property_history"))
        run_stage(defs, instance, stage_of(defs, "interactions", "splits", "item_catalog"))
        job = defs.resolve_implicit_global_asset_job_def()
        seconds = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = job.execute_in_process(
                instance=instance,
                asset_selection=[AssetKey("ablation_report")],
                run_config=run_config,
            )
            assert result.success
            seconds.append(time.perf_counter() - start)
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        table = pl.from_arrow(con.sql("select * from recsys.ablation_report").arrow())
    pl.Config.set_tbl_cols(20)
    pl.Config.set_tbl_width_chars(220)
    pl.Config.set_tbl_rows(100)
    print(summary_table(table))
    print(f"scale {args.scale}, config {config}: {table.height} rows")
    print(f"ablation_report seconds: {[round(s, 1) for s in seconds]}")
    print(f"median {statistics.median(seconds):.1f} s (work dir {work})")


if __name__ == "__main__":
    main()
