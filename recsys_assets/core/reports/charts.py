"""Charts of the web pages that no report asset draws already: events per day, the leaderboard.

Built like ``core.analytics.plots`` (``Figure`` on an Agg canvas, never pyplot).
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from recsys_assets.core.analytics.plots import new_figure

EVENT_COLOURS = {"view": "#4c72b0", "addtocart": "#dd8452", "transaction": "#55a868"}


def plot_daily_events(daily: pl.DataFrame, title: str = "Events per day (UTC)") -> Figure:
    """One line per event type over the days of the file (``day`` as date, ``event``, ``events``);
    log scale, since views outnumber purchases about a hundred to one."""
    fig = new_figure(8, 2.8)
    ax = fig.subplots()
    ax.set_title(title, fontsize=10)
    for event, colour in EVENT_COLOURS.items():
        part = daily.filter(pl.col("event") == event).sort("day")
        if part.height:
            days = [datetime.combine(d, datetime.min.time(), UTC) for d in part["day"].to_list()]
            ax.plot(days, part["events"].to_numpy(), label=event, color=colour, lw=1.2)
    if daily.height and int(daily["events"].min()) > 0:
        ax.set_yscale("log")
    ax.tick_params(labelsize=8)
    ax.set_ylabel("events", fontsize=8)
    ax.legend(fontsize=8, loc="upper left", ncols=3)
    fig.autofmt_xdate()
    return fig


def plot_leaderboard(table: pl.DataFrame, metric: str = "ndcg_at_10") -> Figure:
    """Horizontal bars of one metric per model, best on top, the Popularity baseline greyed."""
    rows = table.sort(metric, descending=True, nulls_last=True)
    fig = new_figure(6, 0.9 + 0.34 * max(1, rows.height))
    ax = fig.subplots()
    ax.set_title(
        f"Leaderboard: {metric.replace('_at_', '@').upper()} on the test split", fontsize=10
    )
    models = rows["model"].to_list()
    values = rows[metric].cast(pl.Float64).fill_null(0).to_numpy()
    colours = np.where(np.array(models) == "popular", "#9aa0a6", "#4c72b0")
    bars = ax.barh(models, values, color=colours)
    ax.invert_yaxis()
    ax.bar_label(bars, labels=[f"{v:.4f}" for v in values], padding=2, fontsize=8)
    ax.margins(x=0.18)
    ax.tick_params(labelsize=8)
    return fig
