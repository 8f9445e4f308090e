"""The online A/B loop: feedback stream entries as a table, and the online A/B report.

Feedback events arrive as Redis stream entries (``{prefix}:feedback``, written by
``POST /api/v1/feedback``); they reach this module as plain ``(id, {field: value})`` pairs of
bytes, so nothing here talks to Redis. The report is CTR per experiment arm and day, with the
statistics of :mod:`recsys_assets.core.experiments.stats` (delta-method CI, Welch, SRM).

Pure code: numpy, scipy and polars only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys_assets.core.experiments.stats import (
    ratio_diff_delta,
    sample_ratio_mismatch,
    welch_test,
)

EVENTS = ("impression", "click", "view", "addtocart", "transaction")
NO_EXPERIMENT = "(none)"  # feedback outside any experiment: reported per model, no statistics
ALL_DAYS = "all"

FEEDBACK_SCHEMA: dict[str, pl.DataType] = {
    "stream_id": pl.String,
    "day": pl.Date,
    "timestamp": pl.Int64,
    "user_id": pl.Int64,
    "item_id": pl.Int64,
    "event": pl.String,
    "model": pl.String,
    "version": pl.String,
    "experiment": pl.String,
    "arm": pl.String,
    "rank": pl.Int32,
}

_TEXT_FIELDS = ("event", "model", "version", "experiment", "arm")
_INT_FIELDS = ("timestamp", "user_id", "item_id", "rank")


@dataclass(frozen=True)
class RejectedEntry:
    stream_id: str
    reason: str


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def feedback_frame(
    entries: Sequence[tuple[bytes | str, dict]],
) -> tuple[pl.DataFrame, list[RejectedEntry]]:
    """Stream entries as rows of ``feedback_events``; entries that are not valid feedback are
    returned apart, each with its stream id and the field at fault (the service validates what
    it writes, so these come only from other writers; one must not block the loop)."""
    ids = [_text(entry_id) for entry_id, _ in entries]
    columns = {
        name: [_text(fields.get(name.encode(), fields.get(name))) for _, fields in entries]
        for name in (*_TEXT_FIELDS, *_INT_FIELDS)
    }
    raw = pl.DataFrame(
        {"stream_id": ids, **columns}, schema={n: pl.String for n in ["stream_id", *columns]}
    )
    parsed = raw.with_columns(
        [pl.col(n).cast(pl.Int64, strict=False).alias(f"_{n}") for n in _INT_FIELDS]
    )
    # Why each row is refused, first failing field first (null when the row is valid).
    reason = (
        pl.when(pl.col("_user_id").is_null() | (pl.col("_user_id") < 0))
        .then(pl.lit("user_id: not a non-negative integer"))
        .when(pl.col("_item_id").is_null() | (pl.col("_item_id") < 0))
        .then(pl.lit("item_id: not a non-negative integer"))
        .when(~pl.col("event").is_in(EVENTS))
        .then(pl.lit(f"event: not one of {', '.join(EVENTS)}"))
        .when(pl.col("_timestamp").is_null() | (pl.col("_timestamp") < 0))
        .then(pl.lit("timestamp: not Unix milliseconds"))
        .when((pl.col("rank") != "") & pl.col("_rank").is_null())
        .then(pl.lit("rank: not an integer"))
    )
    checked = parsed.with_columns(reason.alias("_reason"))
    bad = checked.filter(pl.col("_reason").is_not_null())
    rejected = [RejectedEntry(i, r) for i, r in bad.select("stream_id", "_reason").iter_rows()]
    good = checked.filter(pl.col("_reason").is_null()).select(
        "stream_id",
        pl.from_epoch(pl.col("_timestamp"), time_unit="ms").dt.date().alias("day"),
        pl.col("_timestamp").alias("timestamp"),
        pl.col("_user_id").alias("user_id"),
        pl.col("_item_id").alias("item_id"),
        *[pl.col(n) for n in _TEXT_FIELDS],
        pl.col("_rank").alias("rank"),
    )
    return good.cast(FEEDBACK_SCHEMA), rejected  # type: ignore[arg-type]


REPORT_SCHEMA: dict[str, pl.DataType] = {
    "experiment": pl.String,
    "day": pl.String,
    "arm": pl.String,
    "models": pl.String,
    "users": pl.Int64,
    "impressions": pl.Int64,
    "clicks": pl.Int64,
    "ctr": pl.Float64,
    # comparison columns: on the treatment row of an experiment's day, null elsewhere
    "ctr_diff": pl.Float64,
    "ctr_lift": pl.Float64,
    "ctr_diff_std_error": pl.Float64,
    "ctr_diff_ci_low": pl.Float64,
    "ctr_diff_ci_high": pl.Float64,
    "ctr_diff_p_value": pl.Float64,
    "welch_users_control": pl.Int64,
    "welch_users_treatment": pl.Int64,
    "welch_t": pl.Float64,
    "welch_p_value": pl.Float64,
    "srm_chi2": pl.Float64,
    "srm_p_value": pl.Float64,
    "srm_mismatch": pl.Boolean,
}


def per_user_counts(events: pl.DataFrame) -> pl.DataFrame:
    """Impressions and clicks per (experiment, arm, day, user), plus the same over all days.

    The user is the randomisation unit, so every statistic below works on these sums.
    """
    feedback = events.filter(pl.col("event").is_in(["impression", "click"])).with_columns(
        # Outside an experiment the "arm" is the model that answered (plain CTR per model).
        pl.when(pl.col("experiment") == "")
        .then(pl.lit(NO_EXPERIMENT))
        .otherwise(pl.col("experiment"))
        .alias("experiment"),
        pl.when(pl.col("experiment") == "")
        .then(pl.col("model"))
        .otherwise(pl.col("arm"))
        .alias("arm"),
        pl.col("day").cast(pl.String),
    )
    keys = ["experiment", "arm", "user_id"]
    aggs = [
        (pl.col("event") == "impression").sum().cast(pl.Int64).alias("impressions"),
        (pl.col("event") == "click").sum().cast(pl.Int64).alias("clicks"),
        pl.col("model").unique().sort().str.join(",").alias("models"),
    ]
    daily = feedback.group_by([*keys, "day"]).agg(aggs)
    overall = feedback.group_by(keys).agg(aggs).with_columns(day=pl.lit(ALL_DAYS))
    return pl.concat([daily, overall.select(daily.columns)])


def online_ab_table(
    events: pl.DataFrame, treatment_share: float = 0.5, level: float = 0.95
) -> pl.DataFrame:
    """Impressions, clicks and CTR per experiment, arm and day (and ``day = 'all'``); for an
    experiment with both arms, on the treatment row: the CTR difference with its delta-method CI,
    Welch's test on per-user CTR (users with an impression), and the SRM check of users per arm
    against ``treatment_share``."""
    if not 0 < treatment_share < 1:
        raise ValueError(f"treatment_share must be in (0, 1), got {treatment_share}")
    users = per_user_counts(events)
    groups = ["experiment", "day", "arm"]
    table = (
        users.group_by(groups)
        .agg(
            pl.len().cast(pl.Int64).alias("users"),
            pl.col("impressions").sum(),
            pl.col("clicks").sum(),
            pl.col("models").str.split(",").explode().unique().sort().str.join(",").alias("models"),
        )
        .with_columns(
            pl.when(pl.col("impressions") > 0)
            .then(pl.col("clicks") / pl.col("impressions"))
            .alias("ctr")
        )
    )
    comparisons = _comparisons(users, treatment_share, level)
    out = table.join(comparisons, on=groups, how="left") if comparisons.height else table
    for name, dtype in REPORT_SCHEMA.items():
        if name not in out.columns:
            out = out.with_columns(pl.lit(None, dtype=dtype).alias(name))
    # 'all' after the days, control before treatment
    order = pl.col("day") == ALL_DAYS
    return (
        out.select(list(REPORT_SCHEMA))
        .cast(REPORT_SCHEMA)
        .sort(  # type: ignore[arg-type]
            [pl.col("experiment"), order, pl.col("day"), pl.col("arm")]
        )
    )


def _comparisons(users: pl.DataFrame, treatment_share: float, level: float) -> pl.DataFrame:
    """One row per (experiment, day) with both arms: the statistics, keyed to the treatment."""
    rows = []
    arms = users.filter(
        (pl.col("experiment") != NO_EXPERIMENT) & pl.col("arm").is_in(["control", "treatment"])
    )
    # One iteration per experiment-day (a handful), the work inside is vectorised.
    for (experiment, day), group in arms.group_by(["experiment", "day"]):
        control = group.filter(pl.col("arm") == "control")
        treatment = group.filter(pl.col("arm") == "treatment")
        if control.height == 0 or treatment.height == 0:
            continue
        delta = ratio_diff_delta(
            control["clicks"].to_numpy(),
            control["impressions"].to_numpy(),
            treatment["clicks"].to_numpy(),
            treatment["impressions"].to_numpy(),
            level=level,
        )
        welch = welch_test(_user_ctr(control), _user_ctr(treatment))
        srm = sample_ratio_mismatch(
            [control.height, treatment.height], [1 - treatment_share, treatment_share]
        )
        rows.append(
            {
                "experiment": experiment,
                "day": day,
                "arm": "treatment",
                "ctr_diff": delta.diff,
                "ctr_lift": delta.lift,
                "ctr_diff_std_error": delta.std_error,
                "ctr_diff_ci_low": delta.ci_low,
                "ctr_diff_ci_high": delta.ci_high,
                "ctr_diff_p_value": delta.p_value,
                "welch_users_control": welch.n_control,
                "welch_users_treatment": welch.n_treatment,
                "welch_t": welch.t,
                "welch_p_value": welch.p_value,
                "srm_chi2": srm.chi2,
                "srm_p_value": srm.p_value,
                "srm_mismatch": srm.mismatch,
            }
        )
    schema = {"experiment": pl.String, "day": pl.String, "arm": pl.String}
    schema |= {k: v for k, v in REPORT_SCHEMA.items() if k.startswith(("ctr_", "welch_", "srm_"))}
    schema.pop("ctr", None)
    return pl.DataFrame(rows, schema=schema)


def _user_ctr(arm: pl.DataFrame) -> np.ndarray:
    """Per-user CTR of the users who saw at least one impression (Welch's unit values)."""
    seen = arm.filter(pl.col("impressions") > 0)
    return (seen["clicks"] / seen["impressions"]).to_numpy().astype(np.float64)
