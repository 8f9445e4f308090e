"""Plots render to small, valid PNGs wrapped in Markdown image syntax."""

from __future__ import annotations

import base64
import re
import struct

import polars as pl
import pytest

from recsys_assets.core.analytics import plots
from recsys_assets.core.analytics.funnel import conversion_funnel
from recsys_assets.core.analytics.heatmap import activity_heatmap
from recsys_assets.core.analytics.rfm import rfm_segment_summary, rfm_segments
from recsys_assets.core.data.schemas import INTERACTIONS_SCHEMA

MARKDOWN = re.compile(
    r"^!\[(?P<alt>[^\]\n]*)\]\(data:image/png;base64,(?P<data>[A-Za-z0-9+/=]+)\)$"
)
D = 86_400_000


def _png_size(markdown: str) -> tuple[str, int, int]:
    match = MARKDOWN.match(markdown)
    assert match, markdown[:80]
    png = base64.b64decode(match["data"], validate=True)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return match["alt"], width, height


@pytest.fixture
def interactions() -> pl.DataFrame:
    rows = [
        (1, 10, "view", 0, None),
        (1, 10, "addtocart", 1000, None),
        (1, 10, "transaction", 2000, 7),
        (2, 11, "view", D + 5, None),
        (2, 11, "transaction", 2 * D, 8),
    ]
    user, item, event, ts, tid = zip(*rows, strict=True)
    n = len(rows)
    return pl.DataFrame(
        {"user_id": user, "item_id": item, "event": event, "timestamp": ts,
         "transaction_id": tid, "weight": [1.0] * n, "session_id": [0] * n},
        schema=INTERACTIONS_SCHEMA,
    )  # fmt: skip


def _figures(interactions: pl.DataFrame) -> dict:
    catalog = pl.DataFrame({"item_id": [10, 11], "category_id": [1, 2]})
    history = pl.DataFrame(
        {"item_id": [10], "timestamp": [0], "property": ["price"], "value": [3.0]}
    )
    return {
        "Conversion funnel": plots.plot_funnel(conversion_funnel(interactions, catalog)),
        "Activity: events by weekday and hour (UTC)": plots.plot_heatmap(
            activity_heatmap(interactions)
        ),
        "RFM segments": plots.plot_rfm_segments(
            rfm_segment_summary(rfm_segments(interactions, history))
        ),
    }


def test_plots_are_small_valid_png_markdown(interactions):
    for title, figure in _figures(interactions).items():
        alt, width, height = _png_size(plots.figure_to_markdown(figure))
        assert alt == title
        # dpi 80 and a few inches: a small image for Dagster's event log
        assert 100 < width <= 800 and 100 < height <= 400, (title, width, height)


def test_plots_handle_empty_tables(interactions):
    for title, figure in _figures(interactions.clear()).items():
        assert _png_size(plots.figure_to_markdown(figure))[0] == title


def test_rfm_plot_says_when_there_is_no_buyer(interactions):
    """A click-stream without purchases has no RFM segment: the plot says why it is empty."""

    def texts(frame):
        figure = _figures(frame)["RFM segments"]
        return [t.get_text() for t in figure.axes[0].texts]

    no_purchases = interactions.filter(pl.col("event") != "transaction")
    assert any("no buyers" in t for t in texts(no_purchases))
    assert not any("no buyers" in t for t in texts(interactions))


def test_explicit_title_is_sanitised():
    figure = plots.new_figure(2, 1)
    figure.subplots().plot([0, 1], [1, 0])
    alt, width, height = _png_size(plots.figure_to_markdown(figure, title="lift [top]\n10"))
    assert alt == "lift (top) 10"
    assert (width, height) == (160, 80)  # 2 x 1 inches at 80 dpi


def test_missing_column_named():
    with pytest.raises(ValueError, match=r"heatmap: missing column\(s\) \['users'\]"):
        plots.plot_heatmap(pl.DataFrame({"weekday": [0], "hour": [0]}), value="users")
