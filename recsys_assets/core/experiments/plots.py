"""Figures of the experiment reports (lift with CIs, CTR by position, revenue per model).

Built like ``core.analytics.plots``: ``Figure`` objects on an Agg canvas, never pyplot; turn
them into Markdown with ``core.analytics.plots.figure_to_markdown``.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from recsys_assets.core.analytics.plots import new_figure


def _require(frame: pl.DataFrame, columns: tuple[str, ...], table: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{table}: missing column(s) {missing}; columns present: {frame.columns}")


def _empty(fig: Figure, text: str) -> Figure:
    ax = fig.subplots()
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.set_axis_off()
    return fig


def plot_lifts(report: pl.DataFrame, title: str = "Lift of treatment over control") -> Figure:
    """One panel per metric: each comparison's paired lift with its bootstrap CI."""
    _require(
        report,
        ("comparison", "metric", "paired_lift", "lift_ci_low", "lift_ci_high", "significant"),
        "ab_test_report",
    )
    metrics = report["metric"].unique(maintain_order=True).to_list()
    comparisons = report["comparison"].unique(maintain_order=True).to_list()
    fig = new_figure(2.6 * max(1, len(metrics)), 0.9 + 0.32 * max(1, len(comparisons)))
    fig.suptitle(title)
    if report.height == 0:
        return _empty(fig, "no comparisons")
    axes = np.atleast_1d(fig.subplots(1, len(metrics), sharey=True))
    y = np.arange(len(comparisons))
    for ax, metric in zip(axes, metrics, strict=True):
        rows = report.filter(pl.col("metric") == metric)
        pos = np.array([comparisons.index(c) for c in rows["comparison"]])
        lift = rows["paired_lift"].to_numpy() * 100
        low = rows["lift_ci_low"].to_numpy() * 100
        high = rows["lift_ci_high"].to_numpy() * 100
        colours = np.where(rows["significant"].to_numpy(), "#c44e52", "#4c72b0")
        err = np.vstack([np.clip(lift - low, 0, None), np.clip(high - lift, 0, None)])
        for i in range(len(pos)):  # one errorbar per row: matplotlib takes one colour per call
            ax.errorbar(lift[i], y[pos[i]], xerr=err[:, [i]], fmt="o", color=colours[i], capsize=3)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("lift %", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_yticks(y, comparisons)
    axes[0].invert_yaxis()
    return fig


def plot_ctr_by_position(ctr: pl.DataFrame, title: str = "CTR by position") -> Figure:
    """CTR of each list position, one line per model."""
    _require(ctr, ("model", "breakdown", "key", "ctr"), "ctr_report")
    fig = new_figure(6, 3)
    fig.suptitle(title)
    rows = ctr.filter(pl.col("breakdown") == "position")
    if rows.height == 0:
        return _empty(fig, "no shown recommendations")
    ax = fig.subplots()
    for model in sorted(rows["model"].unique().to_list()):
        part = (
            rows.filter(pl.col("model") == model)
            .with_columns(position=pl.col("key").cast(pl.Int64))
            .sort("position")
        )
        ax.plot(part["position"], part["ctr"] * 100, marker="o", ms=3, label=model)
    ax.set_xlabel("position in the list")
    ax.set_ylabel("CTR %")
    ax.legend(fontsize=7, ncols=2)
    return fig


def plot_revenue(table: pl.DataFrame, title: str = "Revenue per 1,000 users") -> Figure:
    """Attributed revenue per 1,000 users per model with its bootstrap interval."""
    _require(
        table,
        (
            "model",
            "revenue_per_1000_users",
            "revenue_per_1000_users_ci_low",
            "revenue_per_1000_users_ci_high",
        ),
        "financial_impact",
    )
    fig = new_figure(6, 0.8 + 0.35 * max(1, table.height))
    fig.suptitle(title)
    if table.height == 0:
        return _empty(fig, "no models")
    ax = fig.subplots()
    value = table["revenue_per_1000_users"].fill_null(0).to_numpy()
    low = table["revenue_per_1000_users_ci_low"].fill_null(0).to_numpy()
    high = table["revenue_per_1000_users_ci_high"].fill_null(0).to_numpy()
    err = np.vstack([np.clip(value - low, 0, None), np.clip(high - value, 0, None)])
    ax.barh(table["model"].to_list(), value, xerr=err, color="#55a868", capsize=3)
    ax.invert_yaxis()
    ax.set_xlabel("revenue per 1,000 users (bootstrap interval)")
    return fig
