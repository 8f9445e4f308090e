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


def test_an_empty_frame_is_stored_as_an_empty_table_with_its_columns(tmp_path):
    """A shop without purchases has no RFM segment: readers get an empty table, not a
    'table does not exist' error; a later non-empty run fills it, an empty one empties it."""
    db = str(tmp_path / "w.duckdb")
    io = {"io_manager": WarehouseIOManager(database=db, schema="recsys")}
    rows: list[dict] = []

    @asset(name="segments")
    def segments() -> pl.DataFrame:
        return pl.DataFrame(
            rows,
            schema={"segment": pl.Utf8, "buyers": pl.Int64, "note": pl.Null},
        )

    @asset(name="report")
    def report(segments: pl.DataFrame) -> pl.DataFrame:
        return pl.DataFrame(
            {"segments": [segments.height], "columns": [",".join(segments.columns)]}
        )

    result = materialize([segments, report], resources=io)
    assert result.success
    with duckdb.connect(db) as con:
        assert con.sql("select * from recsys.report").fetchall() == [(0, "segment,buyers,note")]
        assert [r[0] for r in con.sql("describe recsys.segments").fetchall()] == [
            "segment",
            "buyers",
            "note",
        ]
    rows.append({"segment": "Champions", "buyers": 3, "note": None})
    assert materialize([segments, report], resources=io).success
    rows.clear()
    assert materialize([segments], resources=io).success
    with duckdb.connect(db) as con:
        assert con.sql("select count(*) from recsys.segments").fetchone() == (0,)


def test_a_failed_load_leaves_no_connection_open(tmp_path):
    """A step that fails inside the IO manager (a table that was never written) must not leave
    its connection open: the next step of the process opens the file with the plain
    configuration of the model store, which DuckDB refuses beside a still-open connection."""
    db = str(tmp_path / "w.duckdb")
    io = {"io_manager": WarehouseIOManager(database=db, schema="recsys")}

    @asset(name="written")
    def written() -> pl.DataFrame:
        return pl.DataFrame({"x": [1]})

    assert materialize([written], resources=io).success
    with duckdb.connect(db) as con:
        con.execute("drop table recsys.written")

    @asset(name="reader")
    def reader(written: pl.DataFrame) -> pl.DataFrame:
        return written

    result = materialize([written.to_source_asset(), reader], resources=io, raise_on_error=False)
    assert not result.success
    with duckdb.connect(db) as con:  # another configuration than the IO manager's
        assert con.sql("select 1").fetchone() == (1,)


def test_a_max_rank_input_reads_the_top_of_every_partition_and_its_columns(tmp_path):
    """The experiment reports' input (``ALL_MODEL_LISTS``): every model's lists, rank <= 20
    and four columns, read in DuckDB rather than the whole 100-deep table."""
    from dagster import AllPartitionMapping, AssetIn

    from recsys_assets.defs.experiments._inputs import ALL_MODEL_LISTS, REPORT_MAX_RANK

    db = str(tmp_path / "w.duckdb")
    io = {"io_manager": WarehouseIOManager(database=db, schema="recsys")}

    @asset(name="eval_recommendations", partitions_def=PARTS, metadata={"partition_expr": "model"})
    def lists(context) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "model": context.partition_key,
                "user_id": [7] * 100,
                "rank": list(range(1, 101)),
                "item_id": list(range(100, 200)),
                "score": [0.5] * 100,
            }
        )

    seen = {}

    @asset(ins={"eval_recommendations": ALL_MODEL_LISTS})
    def report(eval_recommendations: pl.DataFrame) -> pl.DataFrame:
        seen["top"] = eval_recommendations
        return pl.DataFrame({"rows": [eval_recommendations.height]})

    @asset(ins={"lists": AssetIn("eval_recommendations", partition_mapping=AllPartitionMapping())})
    def everything(lists: pl.DataFrame) -> pl.DataFrame:
        seen["all"] = lists
        return pl.DataFrame({"rows": [lists.height]})

    for key in ("a", "b"):
        assert materialize([lists], resources=io, partition_key=key).success
    assert materialize([lists.to_source_asset(), report, everything], resources=io).success
    top = seen["top"].sort("model", "rank")
    assert top.columns == ["model", "user_id", "rank", "item_id"]
    assert top.height == 2 * REPORT_MAX_RANK and top["rank"].max() == REPORT_MAX_RANK
    assert top.filter(pl.col("model") == "b")["item_id"].to_list() == list(range(100, 120))
    assert seen["all"].height == 200 and "score" in seen["all"].columns  # others: as before
