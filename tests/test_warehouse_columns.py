"""A partitioned table written by an older version gains the columns a newer asset writes."""

from __future__ import annotations

import duckdb
import polars as pl
from dagster import StaticPartitionsDefinition, asset, materialize

from recsys_assets.io_managers import WarehouseIOManager

PARTS = StaticPartitionsDefinition(["a", "b"])


def _asset(columns: dict):
    @asset(name="scores", partitions_def=PARTS, metadata={"partition_expr": "model"})
    def scores(context) -> pl.DataFrame:
        return pl.DataFrame({"model": [context.partition_key], **columns})

    return scores


def test_new_column_is_added_and_old_partitions_kept(tmp_path):
    db = str(tmp_path / "w.duckdb")
    io = {"io_manager": WarehouseIOManager(database=db, schema="recsys")}
    assert materialize([_asset({"x": [1.0]})], resources=io, partition_key="a").success
    newer = _asset({"x": [2.0], "x_available": [0.5]})
    assert materialize([newer], resources=io, partition_key="b").success
    assert materialize([newer], resources=io, partition_key="b").success  # same columns again
    with duckdb.connect(db) as con:
        rows = con.sql("select * from recsys.scores order by model").fetchall()
    assert rows == [("a", 1.0, None), ("b", 2.0, 0.5)]
