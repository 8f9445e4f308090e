"""Per-user outcomes of every model's stored top-K lists on the test period.

Users are the evaluated users of the offline protocol (``holdout_targets``: history in train +
valid and at least one new item in test); every model scored all of them, so each user has one
outcome per model — the basis of the paired comparisons. For a model's list cut at ``k``:

- ``hit_at_k``, ``ndcg_at_k``: as in ``model_metrics`` (``ranking_metrics`` on the same lists
  and targets, so their means equal the stored metrics);
- ``click``: 1 when the user *viewed* a listed item in the test period;
- ``add_to_cart``, ``purchase``: the same for add-to-cart and transaction events.

Lists exclude items the user had already seen and are computed at the start of the test period,
so every matching test event comes after the list. A user without a list scores 0.

The CUPED covariate is pre-period activity: ``log1p`` of the user's events in train + valid
(counts are heavy-tailed; the log is closer to linear in the 0/1 outcomes, so it explains more
of their variance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys_assets.core.analytics._checks import require_columns
from recsys_assets.core.evaluation.holdout import holdout_targets
from recsys_assets.core.evaluation.metrics import ranking_metrics

HISTORY_SPLITS = ("train", "valid")
TARGET_SPLIT = "test"
EVENT_OUTCOMES = {"click": "view", "add_to_cart": "addtocart", "purchase": "transaction"}
SPLITS_COLUMNS = ("user_id", "item_id", "event", "split")
RECOMMENDATION_COLUMNS = ("model", "user_id", "rank", "item_id")


def outcome_names(k: int) -> tuple[str, ...]:
    return (f"hit_at_{k}", f"ndcg_at_{k}", *EVENT_OUTCOMES)


def check_inputs(recommendations: pl.DataFrame, splits: pl.DataFrame, k: int) -> None:
    require_columns(recommendations, RECOMMENDATION_COLUMNS, "eval_recommendations")
    require_columns(splits, SPLITS_COLUMNS, "splits")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")


def shown_lists(recommendations: pl.DataFrame, k: int) -> pl.DataFrame:
    """The top-``k`` rows of every list: model, user_id, rank, item_id."""
    return recommendations.filter(pl.col("rank") <= k).select(
        pl.col("model").cast(pl.Utf8),
        pl.col("user_id").cast(pl.Int64),
        pl.col("rank").cast(pl.Int32),
        pl.col("item_id").cast(pl.Int64),
    )


def target_events(splits: pl.DataFrame) -> pl.DataFrame:
    """Distinct (user_id, item_id, event) of the test period."""
    return (
        splits.filter(pl.col("split") == TARGET_SPLIT)
        .select(pl.col("user_id").cast(pl.Int64), pl.col("item_id").cast(pl.Int64), "event")
        .unique()
    )


def with_event_flags(shown: pl.DataFrame, splits: pl.DataFrame) -> pl.DataFrame:
    """``shown`` plus 0/1 columns ``click``, ``add_to_cart``, ``purchase`` per listed item."""
    flags = (
        target_events(splits)
        .group_by("user_id", "item_id")
        .agg(
            *[
                (pl.col("event") == event).any().cast(pl.Int8).alias(name)
                for name, event in EVENT_OUTCOMES.items()
            ]
        )
    )
    return shown.join(flags, on=["user_id", "item_id"], how="left").with_columns(
        pl.col(name).fill_null(0) for name in EVENT_OUTCOMES
    )


def per_user_outcomes(
    recommendations: pl.DataFrame, splits: pl.DataFrame, k: int = 10
) -> pl.DataFrame:
    """One row per (model, evaluated user): ``model, user_id`` and the outcomes of the module
    docstring, sorted by model and user."""
    check_inputs(recommendations, splits, k)
    targets = holdout_targets(splits, HISTORY_SPLITS, TARGET_SPLIT)
    users = targets.select("user_id").unique()
    shown = shown_lists(recommendations, k).join(users, on="user_id", how="semi")
    models = sorted(recommendations["model"].unique().to_list())

    ranking = []
    for model in models:  # one vectorised pass per model (a handful), never per user
        _, per_user = ranking_metrics(
            shown.filter(pl.col("model") == model).select("user_id", "rank", "item_id"),
            targets,
            ks=(k,),
        )
        ranking.append(
            per_user.select(
                pl.lit(model).alias("model"),
                "user_id",
                pl.col(f"hit_rate_at_{k}").alias(f"hit_at_{k}"),
                f"ndcg_at_{k}",
            )
        )
    events = (
        with_event_flags(shown, splits)
        .group_by("model", "user_id")
        .agg(*[pl.col(name).max().cast(pl.Float64) for name in EVENT_OUTCOMES])
    )
    grid = pl.DataFrame({"model": models}).join(users, how="cross")
    names = outcome_names(k)
    frame = grid.join(
        pl.concat(ranking) if ranking else pl.DataFrame(schema=_ranking_schema(k)),
        on=["model", "user_id"],
        how="left",
    ).join(events, on=["model", "user_id"], how="left")
    return frame.select(
        "model", "user_id", *[pl.col(name).cast(pl.Float64).fill_null(0.0) for name in names]
    ).sort("model", "user_id")


def _ranking_schema(k: int) -> dict[str, pl.DataType]:
    return {
        "model": pl.Utf8,
        "user_id": pl.Int64,
        f"hit_at_{k}": pl.Float64,
        f"ndcg_at_{k}": pl.Float64,
    }


def pre_period_activity(splits: pl.DataFrame, user_ids: np.ndarray) -> np.ndarray:
    """``log1p`` of each user's events in train + valid, aligned with ``user_ids``."""
    counts = (
        splits.filter(pl.col("split").is_in(list(HISTORY_SPLITS)))
        .group_by(pl.col("user_id").cast(pl.Int64))
        .agg(events=pl.len())
    )
    aligned = (
        pl.DataFrame({"user_id": np.asarray(user_ids, dtype=np.int64)})
        .join(counts, on="user_id", how="left", maintain_order="left")
        .get_column("events")
        .fill_null(0)
        .to_numpy()
    )
    return np.log1p(aligned.astype(np.float64))


@dataclass(frozen=True)
class OutcomeMatrix:
    """Outcomes as one array: ``values[user, model, outcome]``, users sorted by id."""

    user_ids: np.ndarray
    models: tuple[str, ...]
    outcomes: tuple[str, ...]
    values: np.ndarray
    covariate: np.ndarray  # pre-period activity per user (CUPED)

    def column(self, model: str, outcome: str) -> np.ndarray:
        return self.values[:, self.models.index(model), self.outcomes.index(outcome)]

    def flat(self) -> np.ndarray:
        """``(n_users, n_models * n_outcomes)``; column of (m, o) is ``m * n_outcomes + o``."""
        return self.values.reshape(len(self.user_ids), -1)

    def flat_index(self, model: str, outcome: str) -> int:
        return self.models.index(model) * len(self.outcomes) + self.outcomes.index(outcome)


def outcome_matrix(per_user: pl.DataFrame, splits: pl.DataFrame) -> OutcomeMatrix:
    """The long ``per_user_outcomes`` frame as an :class:`OutcomeMatrix` with the covariate."""
    outcomes = tuple(c for c in per_user.columns if c not in ("model", "user_id"))
    models = tuple(sorted(per_user["model"].unique().to_list()))
    ordered = per_user.sort("model", "user_id")
    user_ids = (
        ordered.filter(pl.col("model") == models[0])["user_id"].to_numpy()
        if models
        else (np.empty(0, np.int64))
    )
    n = len(user_ids)
    if ordered.height != n * len(models):
        raise ValueError(
            f"per_user outcomes: expected one row per model and user ({len(models)} x {n}), "
            f"got {ordered.height} rows"
        )
    # (models, users, outcomes) in frame order -> (users, models, outcomes)
    block = ordered.select(outcomes).to_numpy().reshape(len(models), n, len(outcomes))
    values = np.ascontiguousarray(block.transpose(1, 0, 2), dtype=np.float64)
    return OutcomeMatrix(
        user_ids=user_ids,
        models=models,
        outcomes=outcomes,
        values=values,
        covariate=pre_period_activity(splits, user_ids),
    )
