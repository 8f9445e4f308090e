"""Global temporal train / valid / test split.

One pair of cutoffs for everybody (not per user), so no model ever trains on an event that
happened after an event it is evaluated on. With ``n`` interactions sorted by time and
fractions ``(f_train, f_valid, f_test)``:

* ``cutoff_train`` is the timestamp of the ``round(n * f_train)``-th event (half up),
* ``cutoff_valid`` is the timestamp of the ``round(n * (f_train + f_valid))``-th event,
* ``train``: ``timestamp <= cutoff_train``; ``valid``: ``cutoff_train < timestamp <=
  cutoff_valid``; ``test``: ``timestamp > cutoff_valid``.

Events that share a cutoff's timestamp therefore all go to the earlier split. A session that
straddles a cutoff is cut in two, as it would be in production.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from recsys_assets.core.data.schemas import INTERACTIONS_SCHEMA, SPLIT_NAMES, SPLITS_SCHEMA


@dataclass
class SplitReport:
    cutoffs_ms: tuple[int, int]  # last timestamp of train, last timestamp of valid
    counts: dict[str, int]  # interactions per split
    users: dict[str, int]  # distinct users per split
    users_train_and_test: int  # test users that also appear in train (can get personal recs)
    items: dict[str, int]  # distinct items per split


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(not 0 < f < 1 for f in fractions):
        raise ValueError(f"fractions must be three numbers in (0, 1), got {tuple(fractions)}")
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-9):
        raise ValueError(f"fractions must sum to 1, got {tuple(fractions)} (sum {sum(fractions)})")
    return float(fractions[0]), float(fractions[1]), float(fractions[2])


def split_cutoffs(
    timestamps: pl.Series, fractions: Sequence[float] = (0.7, 0.1, 0.2)
) -> tuple[int, int]:
    """The two cutoff timestamps (see module docstring)."""
    f_train, f_valid, _ = _check_fractions(fractions)
    n = timestamps.len()
    if n == 0:
        raise ValueError("cannot split an empty interactions table")
    ordered = timestamps.sort()

    def at(fraction: float) -> int:
        k = min(max(math.floor(n * fraction + 0.5), 1), n)  # half-up, at least one row
        return int(ordered[k - 1])

    return at(f_train), at(f_train + f_valid)


def temporal_split(
    interactions: pl.DataFrame, fractions: Sequence[float] = (0.7, 0.1, 0.2)
) -> tuple[pl.DataFrame, SplitReport]:
    """Label every interaction ``train``/``valid``/``test`` by global time cutoffs.

    Input ``INTERACTIONS_SCHEMA``; output ``SPLITS_SCHEMA`` in the input's row order.
    """
    missing = [c for c in INTERACTIONS_SCHEMA if c not in interactions.columns]
    if missing:
        raise ValueError(f"interactions frame lacks column(s) {missing}")
    c_train, c_valid = split_cutoffs(interactions["timestamp"], fractions)
    ts = pl.col("timestamp")
    out = (
        interactions.select(list(INTERACTIONS_SCHEMA))
        .with_columns(
            split=pl.when(ts <= c_train)
            .then(pl.lit(SPLIT_NAMES[0]))
            .when(ts <= c_valid)
            .then(pl.lit(SPLIT_NAMES[1]))
            .otherwise(pl.lit(SPLIT_NAMES[2]))
        )
        .cast(SPLITS_SCHEMA)
    )

    stats = out.group_by("split").agg(
        n=pl.len(), users=pl.col("user_id").n_unique(), items=pl.col("item_id").n_unique()
    )
    by_split = {row["split"]: row for row in stats.iter_rows(named=True)}  # three rows at most
    zero = {"n": 0, "users": 0, "items": 0}
    train_users = out.filter(pl.col("split") == "train")["user_id"].unique()
    both = out.filter((pl.col("split") == "test") & pl.col("user_id").is_in(train_users.implode()))[
        "user_id"
    ].n_unique()
    report = SplitReport(
        cutoffs_ms=(c_train, c_valid),
        counts={s: by_split.get(s, zero)["n"] for s in SPLIT_NAMES},
        users={s: by_split.get(s, zero)["users"] for s in SPLIT_NAMES},
        users_train_and_test=both,
        items={s: by_split.get(s, zero)["items"] for s in SPLIT_NAMES},
    )
    return out, report
