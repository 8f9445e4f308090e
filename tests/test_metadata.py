"""Metadata helpers: every value keeps the type the Dagster UI needs to render it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

from recsys_assets.core.analytics import plots
from recsys_assets.metadata import frame_metadata, markdown_table

FRAME = pl.DataFrame({"model": ["als", "popular"], "ndcg_at_10": [0.1234567, 0.05]})

# Every MetadataValue kind the assets attach (md tables and md plots, text, json, timestamps),
# plus the other renderable kinds, so that none of them is ever flattened to text again.
METADATA_VALUES = {
    "md_table": MetadataValue.md(markdown_table(FRAME)),
    "md_plot": MetadataValue.md(
        plots.figure_to_markdown(
            plots.plot_rfm_segments(
                pl.DataFrame(
                    {"segment": ["champions", "lost"], "users": [3, 5], "share": [0.4, 0.6]}
                )
            ),
            "RFM segments",
        )
    ),
    "text": MetadataValue.text("1.5 MiB"),
    "json": MetadataValue.json({"a": 1, "b": [1, 2]}),
    "timestamp": MetadataValue.timestamp(1_431_000_000.0),
    "int": MetadataValue.int(3),
    "float": MetadataValue.float(0.25),
    "bool": MetadataValue.bool(True),
    "null": MetadataValue.null(),
    "path": MetadataValue.path("/tmp/x.csv"),
    "url": MetadataValue.url("http://127.0.0.1:8000/"),
    "table": MetadataValue.table(
        [TableRecord({"model": "als"})], schema=TableSchema([TableColumn("model", "string")])
    ),
}


@pytest.mark.parametrize("key", sorted(METADATA_VALUES))
def test_metadata_values_pass_through_unchanged(key):
    value = METADATA_VALUES[key]
    md = frame_metadata(FRAME, **{key: value})
    assert md[key] is value


def test_plot_is_markdown_with_an_inline_png():
    value = METADATA_VALUES["md_plot"]
    out = frame_metadata(FRAME, plot=value)["plot"]
    assert isinstance(out, type(MetadataValue.md("")))
    assert out.md_str.startswith("![RFM segments](data:image/png;base64,")
    # the defect rendered the repr as text: "MarkdownMetadataValue(md_str='![…"
    assert "MetadataValue(" not in out.md_str


def test_plain_values_get_their_dagster_type():
    md = frame_metadata(
        FRAME,
        n=np.int64(7),
        share=np.float32(0.5),
        flag=True,
        name="als",
        counts={"view": np.int64(3), 2: 4},
        versions=["1", "2"],
        missing=None,
        file=Path("/tmp/events.csv"),
        at=datetime(2015, 6, 1, tzinfo=UTC),
        frame=FRAME,
    )
    assert md["n"] == 7 and type(md["n"]) is int
    assert md["share"] == 0.5 and type(md["share"]) is float
    assert md["flag"] is True and md["name"] == "als"
    assert md["counts"] == MetadataValue.json({"view": 3, "2": 4})
    assert md["versions"] == MetadataValue.json(["1", "2"])
    assert md["missing"] == MetadataValue.null()
    assert md["file"] == MetadataValue.path("/tmp/events.csv")
    assert md["at"] == MetadataValue.timestamp(datetime(2015, 6, 1, tzinfo=UTC))
    assert md["frame"] == MetadataValue.md(markdown_table(FRAME))


def test_a_value_without_a_rendering_is_refused_by_name():
    with pytest.raises(TypeError, match="set"):
        frame_metadata(FRAME, odd={1, 2})


def test_frame_metadata_keeps_row_count_and_preview_typed():
    md = frame_metadata(FRAME)
    assert md["dagster/row_count"] == MetadataValue.int(2)
    assert md["preview"].md_str.splitlines()[0] == "| model | ndcg_at_10 |"
