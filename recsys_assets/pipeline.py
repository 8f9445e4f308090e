"""The main job: materialise the whole asset graph into the Dagster instance, stage by stage.

``python -m recsys_assets.pipeline`` is what ``make run`` calls. It does what a user would do with
``dagster asset materialize`` (one run per stage, recorded in ``$DAGSTER_HOME``, so ``dagster dev``
shows every materialisation afterwards), but loads the code once and runs each stage in-process.

Stages exist because a Dagster run covers one partitions definition: the daily events first (one
run for the whole range, as their single-run backfill policy allows), then the unpartitioned
tables. Later stages (per-model partitions, publishing) are appended to ``STAGES``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

from dagster import AssetKey, DagsterInstance
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from recsys_assets.tracking import end_active_mlflow_run


@dataclass(frozen=True)
class Stage:
    name: str
    assets: tuple[str, ...]
    partitioned_by: str | None = None  # None, "days" (whole range in one run) or "models"


STAGES: tuple[Stage, ...] = (
    Stage("ingest events", ("raw_events",), partitioned_by="days"),
    Stage(
        "tables and analytics",
        (
            "category_tree",
            "item_property_history",
            "interactions",
            "splits",
            "item_catalog",
            "conversion_funnel",
            "activity_heatmap",
            "rfm_segments",
            "association_rules",
        ),
    ),
    Stage(
        "models",
        ("tuned_params", "trained_model", "eval_recommendations", "model_metrics"),
        partitioned_by="models",
    ),
    Stage("leaderboard", ("session_metrics", "leaderboard")),
    Stage("publish", ("serving_bundle",)),
)


def stage_partition_keys(stage: Stage) -> list[str]:
    """Every partition a stage runs over: all days, all models, or none."""
    from recsys_assets.partitions import daily_partitions, model_partitions

    by_kind = {"days": daily_partitions, "models": model_partitions}
    return by_kind[stage.partitioned_by].get_partition_keys() if stage.partitioned_by else []


def run_stage(defs, instance: DagsterInstance, stage: Stage, partition_keys: list[str]) -> float:
    """Execute one stage as one Dagster run (one run per partition for per-model stages)."""
    job = defs.resolve_implicit_global_asset_job_def()
    selection = [AssetKey(a) for a in stage.assets]
    start = time.perf_counter()
    tag_sets: list[dict[str, str]]
    if stage.partitioned_by == "days":
        tag_sets = [
            {
                ASSET_PARTITION_RANGE_START_TAG: partition_keys[0],
                ASSET_PARTITION_RANGE_END_TAG: partition_keys[-1],
            }
        ]
    elif stage.partitioned_by == "models":
        tag_sets = [{"dagster/partition": key} for key in partition_keys]
    else:
        tag_sets = [{}]
    for tags in tag_sets:
        result = job.execute_in_process(
            instance=instance,
            asset_selection=selection,
            tags=tags,
            raise_on_error=False,
            # Step-by-step events stay in the instance (the UI shows them); the terminal gets
            # warnings and errors only.
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
        end_active_mlflow_run()
        if not result.success:
            # the user's error (e.g. "events.csv, row 42, column 'event': …") is the cause of
            # Dagster's generic "Error occurred while executing op" wrapper
            failures = [
                f"{e.step_key}: {_user_error(e.event_specific_data.error)}"
                for e in result.all_events
                if e.is_step_failure
            ]
            raise SystemExit(
                f"stage '{stage.name}' failed ({tags or 'unpartitioned'}):\n" + "\n".join(failures)
            )
    return time.perf_counter() - start


def _user_error(error) -> str:
    """The cause's message: Dagster wraps it in a generic "Error occurred while executing op"."""
    return (error.cause or error).message.strip()


def _quiet_library_warnings() -> None:
    """Beta/deprecation notices from dagster-mlflow and friends say nothing to a user of recsys."""
    import warnings

    from dagster import BetaWarning, PreviewWarning

    for category in (BetaWarning, PreviewWarning, DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run only the stages with these names")
    args = parser.parse_args(argv)
    _quiet_library_warnings()

    from recsys_assets.definitions import defs

    source = defs.resources["source"]
    raw = source.ensure()  # generates the embedded default when no events file is there
    print(f"raw files: {raw}", flush=True)
    instance = DagsterInstance.get()
    for stage in STAGES:
        if args.only and stage.name not in args.only:
            continue
        print(f"== {stage.name}: {', '.join(stage.assets)}", flush=True)
        seconds = run_stage(defs, instance, stage, stage_partition_keys(stage))
        print(f"   done in {seconds:.1f} s", flush=True)
    print_leaderboard(defs)
    return 0


def print_leaderboard(defs) -> None:
    """Show the seed's results table once the models have been scored."""
    import duckdb
    import polars as pl

    from recsys_assets.assets.models import LEADERBOARD_COLUMNS

    database = defs.resources["warehouse"].database
    with duckdb.connect(database) as con:
        try:
            table = pl.from_arrow(con.sql("select * from recsys.leaderboard").arrow())
        except duckdb.CatalogException:
            return
    cols = ["model", *[c for c in LEADERBOARD_COLUMNS if c in table.columns]]
    with pl.Config(tbl_rows=20, tbl_cols=12, float_precision=4, tbl_hide_dataframe_shape=True):
        print("\nLeaderboard (test split, top-K over the full catalogue):")
        print(table.select(cols).rename(LEADERBOARD_COLUMNS))


if __name__ == "__main__":
    sys.exit(main())
