"""The models' stored ``eval_recommendations`` lists, read back for the very model versions
that were scored: one scoring pass per model serves its evaluation, the Hybrid's candidates
(its sources' lists) and the serving bundle's personal lists (the same top-N)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import polars as pl
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from recsys_assets.core.duckdb_retry import connect
from recsys_assets.core.evaluation.metrics import frame_to_lists
from recsys_assets.core.serving_bundle import Lists


@dataclass(frozen=True)
class ScoredLists:
    """What a model's latest ``eval_recommendations`` holds: the model version it scored and
    how many ranks deep its lists go."""

    version: int
    depth: int


# eval_recommendations recorded no depth before it was raised from 50 to the bundle's 100
DEPTH_BEFORE_RECORDED = 50


def scored_lists(instance: DagsterInstance, names: Iterable[str]) -> dict[str, ScoredLists]:
    """For each model, what its latest ``eval_recommendations`` scored (from the
    materialisation's metadata); models never scored are left out."""
    found = {}
    for name in names:
        records = instance.fetch_materializations(
            AssetRecordsFilter(AssetKey("eval_recommendations"), asset_partitions=[name]),
            limit=1,
        ).records
        meta = records[0].asset_materialization.metadata if records else {}
        if "model_version" in meta:
            depth = meta["list_depth"].value if "list_depth" in meta else DEPTH_BEFORE_RECORDED
            found[name] = ScoredLists(int(meta["model_version"].value), int(depth))
    return found


def matching(wanted: Mapping[str, int], scored: Mapping[str, ScoredLists], depth: int) -> list[str]:
    """The models whose stored lists were scored from the version ``wanted`` names and go at
    least ``depth`` ranks deep."""
    return [
        name
        for name, version in wanted.items()
        if name in scored and scored[name].version == int(version) and scored[name].depth >= depth
    ]


def load_lists(database: str, schema: str, name: str, width: int) -> Lists:
    """One model's stored lists as arrays, ``width`` ranks deep (shorter lists padded)."""
    with connect(database) as con:
        frame = pl.from_arrow(
            con.execute(
                f"select user_id, rank, item_id, score from {schema}.eval_recommendations "
                "where model = ? and rank <= ?",
                [name, width],
            ).fetch_arrow_table()
        )
    return frame_to_lists(frame, width)
