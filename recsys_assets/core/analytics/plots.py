"""Small PNG plots of the analytics tables, as Markdown the Dagster UI renders inline.

Figures are built as ``matplotlib.figure.Figure`` objects on an Agg canvas, never through
``pyplot``: no global figure registry to leak memory in a long-running Dagster process, no GUI
backend needed on a headless machine, and no change to the backend of a notebook that imports
this module. PNGs are kept small (``DPI`` 80, a few inches wide) because Dagster stores
Markdown metadata in its event log.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 80
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` × ``height`` inches attached to an Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _figure_title(fig: Figure) -> str:
    if fig.get_suptitle():
        return fig.get_suptitle()
    for ax in fig.axes:
        if ax.get_title():
            return ax.get_title()
    return "figure"


def figure_to_png(fig: Figure, *, dpi: int = DPI) -> bytes:
    """PNG bytes of ``fig``."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def figure_to_markdown(fig: Figure, title: str | None = None, *, dpi: int = DPI) -> str:
    """``![title](data:image/png;base64,…)`` for ``fig``; the title defaults to the figure's."""
    alt = (title if title is not None else _figure_title(fig)).replace("\n", " ")
    # brackets would end the Markdown alt text early
    alt = alt.replace("[", "(").replace("]", ")")
    encoded = base64.b64encode(figure_to_png(fig, dpi=dpi)).decode("ascii")
    return f"![{alt}](data:image/png;base64,{encoded})"


def _require(frame: pl.DataFrame, columns: tuple[str, ...], table: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{table}: missing column(s) {missing}; columns present: {frame.columns}")


def plot_funnel(funnel: pl.DataFrame, title: str = "Conversion funnel") -> Figure:
    """Overall stage counts (log scale) beside the daily pair conversion rates."""
    _require(
        funnel,
        ("scope", "key", "views", "addtocarts", "transactions", "view_to_cart", "cart_to_purchase"),
        "funnel",
    )
    fig = new_figure(8, 3)
    fig.suptitle(title)
    counts_ax, rates_ax = fig.subplots(1, 2, width_ratios=(1, 1.4))

    overall = funnel.filter(pl.col("scope") == "overall")
    stages = ("views", "addtocarts", "transactions")
    values = [int(overall[s].sum()) for s in stages]
    bars = counts_ax.barh(["view", "add-to-cart", "purchase"], values, color="#4c72b0")
    counts_ax.invert_yaxis()
    if min(values) > 0:
        counts_ax.set_xscale("log")  # views outnumber purchases ~100:1
    counts_ax.bar_label(bars, labels=[f"{v:,}" for v in values], padding=2, fontsize=8)
    counts_ax.margins(x=0.3)  # room for the count labels right of the bars
    counts_ax.set_title("events, overall", fontsize=9)

    daily = funnel.filter(pl.col("scope") == "day").sort("key")
    x = np.arange(daily.height)
    for column, label in (
        ("view_to_cart", "view → cart"),
        ("cart_to_purchase", "cart → purchase"),
        ("view_to_purchase", "view → purchase"),
    ):
        if column in daily.columns:
            rates_ax.plot(x, daily[column].cast(pl.Float64).to_numpy(), label=label, lw=1)
    if daily.height:
        ticks = np.linspace(0, daily.height - 1, num=min(daily.height, 5)).round().astype(int)
        rates_ax.set_xticks(ticks, [daily["key"][int(t)] for t in ticks], fontsize=7)
        rates_ax.legend(fontsize=7, loc="upper right")
    rates_ax.set_title("pair conversion per day", fontsize=9)
    rates_ax.set_ylabel("rate", fontsize=8)
    return fig


def plot_heatmap(heatmap: pl.DataFrame, value: str = "events", title: str | None = None) -> Figure:
    """A 7 × 24 colour grid of one heat-map column (weekdays down, UTC hours across)."""
    _require(heatmap, ("weekday", "hour", value), "heatmap")
    grid = np.zeros((7, 24))
    grid[heatmap["weekday"].to_numpy(), heatmap["hour"].to_numpy()] = (
        heatmap[value].cast(pl.Float64).to_numpy()
    )
    fig = new_figure(8, 2.8)
    ax = fig.subplots()
    image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(7), WEEKDAYS, fontsize=8)
    ax.set_xticks(range(0, 24, 2), [str(h) for h in range(0, 24, 2)], fontsize=8)
    ax.set_xlabel("hour (UTC)", fontsize=8)
    ax.set_title(title or f"Activity: {value} by weekday and hour (UTC)", fontsize=10)
    fig.colorbar(image, ax=ax, pad=0.01)
    return fig


def plot_rfm_segments(summary: pl.DataFrame, title: str = "RFM segments") -> Figure:
    """Users per RFM segment as horizontal bars labelled with their share of buyers."""
    _require(summary, ("segment", "users", "share"), "rfm_summary")
    fig = new_figure(6, 3.2)
    ax = fig.subplots()
    bars = ax.barh(summary["segment"].to_list(), summary["users"].to_list(), color="#55a868")
    ax.invert_yaxis()
    no_buyers = not summary.height or not summary["users"].fill_null(0).sum()
    if not no_buyers:
        ax.bar_label(
            bars, labels=[f"{s:.0%}" for s in summary["share"].fill_null(0).to_list()], fontsize=7
        )
    ax.tick_params(labelsize=8)
    ax.set_xlabel("users", fontsize=8)
    ax.set_title(title, fontsize=10)
    if no_buyers:
        # a click-stream without purchases (a shop that does not send them): say so, instead
        # of an empty frame with meaningless ±0.04 ticks
        ax.set_xticks([])
        ax.text(
            0.5,
            0.5,
            "no buyers in this data: RFM needs purchases",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=9,
            color="#555555",
        )
    return fig
