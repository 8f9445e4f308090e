"""The documents of the service's pages (home, analytics, experiments) and their charts.

Each ``*_page`` function takes the warehouse's tables and returns ``(document, charts)``: a
JSON-ready dict of figures and page tables (:func:`page_table`) and ``{name: PNG bytes}``.
A report that is not there (``None``) is listed in the document's ``missing``, never invented.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl

from recsys_assets.core.analytics import plots
from recsys_assets.core.analytics.rfm import rfm_segment_summary
from recsys_assets.core.experiments.ablation import plot_deltas
from recsys_assets.core.experiments.plots import plot_ctr_by_position, plot_lifts, plot_revenue
from recsys_assets.core.reports.charts import plot_daily_events, plot_leaderboard
from recsys_assets.core.reports.tables import page_table

CHART_DPI = 100  # crisper than the Dagster metadata's 80, still ~30-60 kB per chart
EVENTS = ("view", "addtocart", "transaction")
EXPERIMENT_REPORTS = ("ab_test_report", "ctr_report", "financial_impact", "ablation_report")


def _png(fig) -> bytes:
    return plots.figure_to_png(fig, dpi=CHART_DPI)


def _day(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def _require(frame: pl.DataFrame, columns: tuple[str, ...], table: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{table}: missing column(s) {missing}; columns present: {frame.columns}")


# --- home -----------------------------------------------------------------------------------------
def home_page(raw_events: pl.DataFrame, splits: pl.DataFrame) -> tuple[dict, dict[str, bytes]]:
    """The data set at a glance: the file as loaded, what cleaning kept, the three splits."""
    _require(
        raw_events, ("timestamp", "visitorid", "event", "itemid", "transactionid"), "raw_events"
    )
    _require(splits, ("user_id", "item_id", "timestamp", "session_id", "split"), "splits")
    ts = raw_events["timestamp"]
    n = raw_events.height
    counts = dict(raw_events.group_by("event").len().iter_rows())
    mix = pl.DataFrame(
        {"event": list(EVENTS), "events": [int(counts.get(e, 0)) for e in EVENTS]},
        schema={"event": pl.Utf8, "events": pl.Int64},
    ).with_columns(share=pl.col("events") / n if n else pl.lit(0.0))
    days = raw_events.select(
        pl.from_epoch("timestamp", time_unit="ms").dt.date().alias("day"), "event"
    )
    daily = days.group_by("day", "event").agg(events=pl.len())
    dataset = {
        "events": n,
        "visitors": int(raw_events["visitorid"].n_unique()),
        "items": int(raw_events["itemid"].n_unique()),
        "transactions": int(raw_events["transactionid"].drop_nulls().n_unique()),
        "first_day": _day(ts.min()),
        "last_day": _day(ts.max()),
        "days": int(days["day"].n_unique()),
    }
    per_split = (
        splits.group_by("split")
        .agg(
            events=pl.len(),
            users=pl.col("user_id").n_unique(),
            items=pl.col("item_id").n_unique(),
            first_ms=pl.col("timestamp").min(),
            last_ms=pl.col("timestamp").max(),
        )
        .with_columns(
            order=pl.col("split").replace_strict({"train": 0, "valid": 1, "test": 2}, default=3)
        )
        .sort("order")
        .with_columns(
            first_day=pl.from_epoch("first_ms", time_unit="ms").dt.strftime("%Y-%m-%d"),
            last_day=pl.from_epoch("last_ms", time_unit="ms").dt.strftime("%Y-%m-%d"),
        )
    )
    cleaned = {
        "interactions": splits.height,
        "users": int(splits["user_id"].n_unique()),
        "items": int(splits["item_id"].n_unique()),
        "sessions": int(splits["session_id"].n_unique()),
        "dropped_events": n - splits.height,  # bots and outliers (duplicates never loaded)
    }
    doc = {
        "dataset": dataset,
        "event_mix": page_table(
            mix,
            [("event", "event", "text"), ("events", "events", "int"), ("share", "share", "pct")],
            "event",
        ),
        "cleaned": cleaned,
        "splits": page_table(
            per_split,
            [
                ("split", "split", "text"),
                ("events", "interactions", "int"),
                ("users", "users", "int"),
                ("items", "items", "int"),
                ("first_day", "from", "text"),
                ("last_day", "to", "text"),
            ],
            "split",
        ),
        "charts": {"daily_events": "Events per day (UTC), by type"},
    }
    return doc, {"daily_events": _png(plot_daily_events(daily))}


# --- analytics ------------------------------------------------------------------------------------
FUNNEL_STAGES = ("views", "addtocarts", "transactions", "viewers", "carters", "buyers")
FUNNEL_RATES = ("view_to_cart", "cart_to_purchase", "view_to_purchase")
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def analytics_page(
    funnel: pl.DataFrame,
    heatmap: pl.DataFrame,
    rfm: pl.DataFrame,
    rules: pl.DataFrame,
    top_rules: int = 8,
) -> tuple[dict, dict[str, bytes]]:
    """Conversion funnel, RFM segments, weekday × hour activity, the strongest rules."""
    _require(funnel, ("scope", "key", *FUNNEL_STAGES, *FUNNEL_RATES), "conversion_funnel")
    _require(heatmap, ("weekday", "hour", "events", "users"), "activity_heatmap")
    _require(
        rules, ("antecedents", "consequents", "support", "confidence", "lift"), "association_rules"
    )
    overall = funnel.filter(pl.col("scope") == "overall")
    if overall.height != 1:
        raise ValueError(f"conversion_funnel: expected one 'overall' row, found {overall.height}")
    categories = funnel.filter(pl.col("scope") == "category").sort("views", descending=True)
    summary = rfm_segment_summary(rfm)
    busiest = (
        heatmap.sort("events", descending=True)
        .head(8)
        .with_columns(
            day=pl.col("weekday").replace_strict(dict(enumerate(WEEKDAYS)), return_dtype=pl.Utf8)
        )
    )
    group = [c for c in ("basket_type", "algorithm") if c in rules.columns]
    found = (
        rules.group_by(group).len().sort(group) if group else pl.DataFrame({"len": [rules.height]})
    )
    # Both algorithms mine the same baskets: show FP-Growth's rules once, not each rule twice,
    # and the strongest of each basket type (session rules have the larger lifts).
    shown = (
        rules.filter(pl.col("algorithm") == "fpgrowth") if "algorithm" in rules.columns else rules
    )
    strongest = shown.sort(["lift", "confidence"], descending=True)
    if "basket_type" in strongest.columns:
        strongest = strongest.group_by("basket_type", maintain_order=True).head(top_rules)
    else:
        strongest = strongest.head(top_rules)
    doc = {
        "funnel": {
            "overall": overall.select(*FUNNEL_STAGES, *FUNNEL_RATES).row(0, named=True),
            "categories": page_table(
                categories,
                [
                    ("key", "category", "text"),
                    ("views", "views", "int"),
                    ("addtocarts", "add-to-carts", "int"),
                    ("transactions", "purchases", "int"),
                    ("view_to_cart", "view → cart", "pct"),
                    ("cart_to_purchase", "cart → purchase", "pct"),
                    ("view_to_purchase", "view → purchase", "pct"),
                ],
                "key",
            ),
            "days": int(funnel.filter(pl.col("scope") == "day").height),
        },
        "rfm": {
            "buyers": rfm.height,
            "segments": page_table(
                summary,
                [
                    ("segment", "segment", "text"),
                    ("users", "buyers", "int"),
                    ("share", "share", "pct"),
                    ("mean_recency_days", "recency (days)", "float"),
                    ("mean_frequency", "purchases", "float"),
                    ("mean_monetary", "spent", "money"),
                ],
                "segment",
            ),
        },
        "heatmap": {
            "events": int(heatmap["events"].sum()),
            "busiest": page_table(
                busiest,
                [
                    ("day", "weekday", "text"),
                    ("hour", "hour (UTC)", "int"),
                    ("events", "events", "int"),
                    ("users", "users", "int"),
                ],
            ),  # fmt: skip
        },
        "rules": {
            "total": rules.height,
            "found": [
                {**{g: row[g] for g in group}, "rules": int(row["len"])}
                for row in found.iter_rows(named=True)
            ],
            "top": page_table(
                strongest,
                [
                    ("antecedents", "if bought / carted", "text"),
                    ("consequents", "then also", "text"),
                    ("support", "support", "float"),
                    ("confidence", "confidence", "pct"),
                    ("lift", "lift", "ratio"),
                    ("basket_type", "baskets", "text"),
                ],
                optional=True,
            ),
        },
        "charts": {
            "funnel": "Conversion funnel: events overall and pair conversion per day",
            "heatmap": "Events by weekday and hour (UTC)",
            "rfm_segments": "Buyers per RFM segment",
        },
    }
    charts = {
        "funnel": _png(plots.plot_funnel(funnel)),
        "heatmap": _png(plots.plot_heatmap(heatmap)),
        "rfm_segments": _png(plots.plot_rfm_segments(summary)),
    }
    return doc, charts


# --- experiments ----------------------------------------------------------------------------------
LEADERBOARD = [
    ("model", "model", "text"),
    ("model_version", "version", "text"),
    ("ndcg_at_10", "NDCG@10", "float"),
    ("hit_rate_at_10", "HR@10", "float"),
    ("precision_at_10", "P@10", "float"),
    ("recall_at_10", "R@10", "float"),
    ("mrr_at_10", "MRR@10", "float"),
    ("recall_at_20", "R@20", "float"),
    ("coverage_at_20", "coverage@20", "pct"),
    ("session_recall_at_20", "session R@20", "float"),
    ("ndcg_at_10_vs_popular", "vs Popularity", "ratio"),
    ("train_seconds", "train", "seconds"),
    ("users_evaluated", "users", "int"),
]
AB_COLUMNS = [
    ("comparison", "comparison", "text"),
    ("metric", "metric", "text"),
    ("paired_mean_control", "control", "float"),
    ("paired_mean_treatment", "treatment", "float"),
    ("paired_lift", "lift", "pct"),
    ("lift_ci_low", "CI low", "pct"),
    ("lift_ci_high", "CI high", "pct"),
    ("paired_p_adjusted", "p adj.", "p"),
    ("paired_mde_rel", "MDE", "pct"),
    ("welch_p_value", "p Welch", "p"),
    ("cuped_variance_reduction", "CUPED var. red.", "pct"),
    ("srm_mismatch", "SRM", "bool"),
    ("verdict", "verdict", "text"),
]
CTR_COLUMNS = [
    ("model", "model", "text"),
    ("users", "users", "int"),
    ("shown", "shown", "int"),
    ("ctr", "CTR", "pct"),
    ("cart_rate", "cart rate", "pct"),
    ("purchase_rate", "purchase rate", "pct"),
]
MONEY_COLUMNS = [
    ("model", "model", "text"),
    ("buyers", "buyers", "int"),
    ("attributed_purchases", "purchases", "int"),
    ("revenue_per_1000_users", "revenue / 1k users", "money"),
    ("revenue_per_1000_users_ci_low", "CI low", "money"),
    ("revenue_per_1000_users_ci_high", "CI high", "money"),
    ("incremental_per_1000_users", "vs baseline / 1k", "money"),
    ("monthly_incremental_revenue", "monthly increment", "money"),
    ("monthly_incremental_revenue_ci_low", "CI low", "money"),
    ("monthly_incremental_revenue_ci_high", "CI high", "money"),
]


def _first_json(frame: pl.DataFrame, column: str) -> dict:
    if column not in frame.columns or frame.height == 0 or frame[column][0] is None:
        return {}
    return json.loads(frame[column][0])


ABLATION_COLUMNS = [
    ("model", "model", "text"),
    ("variant", "variant", "text"),
    ("changed_params", "changed", "text"),
    ("ndcg_at_10", "NDCG@10", "float"),
    ("delta_ndcg_at_10", "Δ NDCG@10", "float"),
    ("relative_delta_ndcg_at_10", "Δ %", "pct"),
    ("recall_at_10", "R@10", "float"),
    ("delta_recall_at_10", "Δ R@10", "float"),
    ("hit_rate_at_10", "HR@10", "float"),
    ("delta_hit_rate_at_10", "Δ HR@10", "float"),
    ("train_seconds", "train", "seconds"),
    ("users_evaluated", "users", "int"),
    ("error", "error", "text"),
]


def experiments_page(
    leaderboard: pl.DataFrame,
    ab_test_report: pl.DataFrame | None = None,
    ctr_report: pl.DataFrame | None = None,
    financial_impact: pl.DataFrame | None = None,
    ablation_report: pl.DataFrame | None = None,
) -> tuple[dict, dict[str, bytes]]:
    """Leaderboard, A/B results with intervals, CTR by position, money and ablation; a report
    passed as ``None`` (not in this graph yet) is named in ``missing``."""
    _require(leaderboard, ("model", "ndcg_at_10"), "leaderboard")
    board = leaderboard.sort("ndcg_at_10", descending=True, nulls_last=True)
    doc: dict = {
        "champion": str(board["model"][0]) if board.height else None,
        "leaderboard": page_table(board, LEADERBOARD, "model", optional=True),
        "missing": [],
        "charts": {"leaderboard": "NDCG@10 per model on the test split"},
    }
    charts = {"leaderboard": _png(plot_leaderboard(board))}
    reports = {
        "ab_test_report": ab_test_report,
        "ctr_report": ctr_report,
        "financial_impact": financial_impact,
        "ablation_report": ablation_report,
    }
    doc["missing"] = [name for name in EXPERIMENT_REPORTS if reports[name] is None]
    if ab_test_report is not None:
        settings = _first_json(ab_test_report, "settings_json")
        doc["ab_test"] = {
            "results": page_table(ab_test_report, AB_COLUMNS, optional=True),
            "comparisons": ab_test_report["comparison"].unique(maintain_order=True).to_list(),
            "significant": int(ab_test_report["significant"].sum())
            if "significant" in ab_test_report.columns
            else None,
            "settings": settings,
        }
        doc["charts"]["ab_lifts"] = "Paired lift of each challenger with its bootstrap interval"
        charts["ab_lifts"] = _png(plot_lifts(ab_test_report))
    if ctr_report is not None:
        overall = ctr_report.filter(pl.col("breakdown") == "overall").sort("ctr", descending=True)
        by_position = ctr_report.filter(pl.col("breakdown") == "position")
        doc["ctr"] = {
            "overall": page_table(overall, CTR_COLUMNS, "model"),
            "positions": int(by_position["key"].n_unique()) if by_position.height else 0,
        }
        doc["charts"]["ctr_by_position"] = "CTR by list position, per model"
        charts["ctr_by_position"] = _png(plot_ctr_by_position(ctr_report))
    if financial_impact is not None:
        doc["money"] = {
            "results": page_table(financial_impact, MONEY_COLUMNS, "model", optional=True),
            "assumptions": _first_json(financial_impact, "assumptions_json"),
        }
        doc["charts"]["revenue"] = "Attributed revenue per 1,000 users, bootstrap interval"
        charts["revenue"] = _png(plot_revenue(financial_impact))
    if ablation_report is not None:
        doc["ablation"] = {
            "table": page_table(ablation_report, ABLATION_COLUMNS, optional=True),
            "variants": ablation_report.height,
        }
        doc["charts"]["ablation"] = "Change of NDCG@10 against each model's base configuration"
        charts["ablation"] = _png(plot_deltas(ablation_report))
    return doc, charts
