"""Foundation benchmark: generation, reading and every ingestion/analytics asset at a given scale.

    python benchmarks/bench_foundation.py --scale 1.0 [--raw-dir DIR] [--repeat 3]

Generates the synthetic data set (unless ``--raw-dir`` already holds one), times the readers, then
materialises each asset of the first two pipeline stages as its own in-process Dagster run into a
temporary DuckDB file, and prints one table of seconds (median over ``--repeat`` for the pure
steps) and the process's peak RSS. Targets at scale 1.0 on 2 cores: generation ≤ 60 s, raw ingest
of all partitions ≤ 30 s, all analytics ≤ 60 s, peak RSS ≤ 6 GB.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--raw-dir", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    from dagster import DagsterInstance

    from recsys_assets.core.data import retailrocket
    from recsys_assets.core.data.schemas import (
        PROPERTY_AVAILABLE,
        PROPERTY_CATEGORY,
        PROPERTY_PRICE,
    )
    from recsys_assets.core.generator import GeneratorConfig, generate_dataset
    from recsys_assets.definitions import build_definitions
    from recsys_assets.pipeline import plan_stages, prepare_raw_data, run_stage
    from recsys_assets.settings import Settings

    rows: list[tuple[str, float, str]] = []
    work = Path(tempfile.mkdtemp(prefix="recsys-bench-"))
    raw = args.raw_dir or work / "raw"
    if args.raw_dir is None:
        seconds, ds = timed(lambda: generate_dataset(raw, GeneratorConfig(scale=args.scale)))
        rows.append(
            (
                "generate",
                seconds,
                f"{ds.n_events:,} events, {ds.n_visitors:,} visitors, {ds.n_items:,} items, "
                f"{ds.n_property_rows:,} property rows (target ≤ 60 s)",
            )
        )

    seconds, (events, _) = timed(lambda: retailrocket.read_events(raw / "events.csv"), args.repeat)
    rows.append(("read events.csv", seconds, f"{events.height:,} rows"))
    props_files = [raw / "item_properties_part1.csv", raw / "item_properties_part2.csv"]
    seconds, (props, _) = timed(lambda: retailrocket.read_item_properties(props_files), args.repeat)
    rows.append(("read item properties (all)", seconds, f"{props.height:,} rows"))
    del props
    seconds, (props, _) = timed(
        lambda: retailrocket.read_item_properties(
            props_files, properties=(PROPERTY_CATEGORY, PROPERTY_AVAILABLE, PROPERTY_PRICE)
        ),
        args.repeat,
    )
    rows.append(("read item properties (3 used)", seconds, f"{props.height:,} rows"))
    del props, events

    settings = replace(
        Settings.from_env(),
        data_dir=work,
        raw_dir=raw,
        duckdb_path=work / "warehouse.duckdb",
        mlflow_tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
    )
    defs = build_definitions(settings)
    with DagsterInstance.ephemeral() as instance:
        prepare_raw_data(defs, instance)  # registers the days of the file
        days = len(instance.get_dynamic_partitions("event_days"))
        for stage in plan_stages(defs)[:2]:
            for key in stage.assets:
                one = plan_stages(defs, [key])[0]
                seconds = run_stage(defs, instance, one)
                note = f"{days} daily partitions, one run" if one.partitions_def else ""
                rows.append((f"asset {key.to_user_string()}", seconds, note))

    analytics = {"conversion_funnel", "activity_heatmap", "rfm_segments", "association_rules"}
    total_analytics = sum(s for n, s, _ in rows if n.removeprefix("asset ") in analytics)
    rows.append(("all analytics assets", total_analytics, "target ≤ 60 s"))
    rows.append(("peak RSS (GB)", peak_rss_gb(), "target ≤ 6 GB"))

    width = max(len(r[0]) for r in rows)
    print(f"\nscale {args.scale}  (work dir {work})")
    print(f"{'step'.ljust(width)} | {'seconds':>8} | note")
    print(f"{'-' * width}-|{'-' * 10}|------")
    for name, value, note in rows:
        print(f"{name.ljust(width)} | {value:8.2f} | {note}")


if __name__ == "__main__":
    main()
