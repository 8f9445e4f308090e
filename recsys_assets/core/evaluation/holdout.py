"""Offline evaluation on the temporal split: who is evaluated, against what, with which lists.

Protocol (DESIGN.md §5): a user is evaluated when they have history in the training splits and
at least one *new* item in the target split — items they already interacted with are excluded
from the targets because every model is asked to exclude already-seen items, so counting them
would only lower every model's recall by the same amount. Lists are top-K over the full catalogue.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import polars as pl

from recsys_assets.core.evaluation.metrics import lists_to_frame, ranking_metrics
from recsys_assets.core.progress import DEFAULT_EVERY_SECONDS, Progress

log = logging.getLogger(__name__)

EVAL_K = 20  # lists are stored at 20 so that @10 and @20 come from the same table


def holdout_targets(
    splits: pl.DataFrame,
    history_splits: Sequence[str] = ("train", "valid"),
    target_split: str = "test",
) -> pl.DataFrame:
    """Distinct (user_id, item_id) pairs of ``target_split`` that are new to a user with history."""
    history = splits.filter(pl.col("split").is_in(list(history_splits))).select(
        "user_id", "item_id"
    )
    targets = (
        splits.filter(pl.col("split") == target_split)
        .select("user_id", "item_id")
        .unique()
        .join(history.select("user_id").unique(), on="user_id", how="semi")
        .join(history.unique(), on=["user_id", "item_id"], how="anti")
    )
    return targets.sort("user_id", "item_id")


def recommend_lists(
    model,
    user_ids: np.ndarray,
    model_name: str,
    k: int = EVAL_K,
    batch_size: int = 4096,
    log_every_seconds: float = DEFAULT_EVERY_SECONDS,
) -> pl.DataFrame:
    """The eval_recommendations frame (model, user_id, rank, item_id, score) for ``user_ids``.

    Scoring every test user is the long step of an evaluation at scale 1.0 (minutes for the
    slower models), so it logs "scored n/N users" every ``log_every_seconds``.
    """
    frames = []
    progress = Progress(log, f"{model_name}: scored", len(user_ids), "users", log_every_seconds)
    for start in range(0, len(user_ids), batch_size):
        users = user_ids[start : start + batch_size]
        recs = model.recommend(users, k=k, exclude_seen=True)
        frames.append(lists_to_frame(users, recs.item_ids, recs.scores, model_name))
        progress.update(start + len(users))
    if not frames:
        return lists_to_frame(
            np.empty(0, np.int64),
            np.empty((0, k), np.int64),
            np.empty((0, k), np.float32),
            model_name,
        )
    return pl.concat(frames)


def evaluate(
    model,
    model_name: str,
    targets: pl.DataFrame,
    n_catalogue_items: int,
    k: int = EVAL_K,
) -> tuple[pl.DataFrame, dict[str, float], pl.DataFrame]:
    """Recommend for every target user and score the lists: (lists, summary, per-user metrics)."""
    users = targets["user_id"].unique().sort().to_numpy()
    lists = recommend_lists(model, users, model_name, k=k)
    summary, per_user = ranking_metrics(
        lists.select("user_id", "rank", "item_id"),
        targets,
        ks=(10, 20),
        n_catalogue_items=n_catalogue_items,
    )
    return lists, summary, per_user
