"""Asset checks of the models domain: is every trained model better than Popularity?

A model that loses to Popularity on NDCG@10 is usually a sign of a broken fit (too few epochs, a
bad tuning trial, an empty feature), not a result worth serving; a warning with the numbers
makes that visible on the asset page without blocking the publish.
"""

import duckdb
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AutomationCondition,
    asset_check,
)
from dagster_duckdb import DuckDBResource

from recsys_assets.settings import DUCKDB_POOL, DUCKDB_SCHEMA

BASELINE = "popular"


def losers_to_baseline(scores: dict[str, float]) -> dict[str, float]:
    """The models (not the baseline) whose score is not above the baseline's."""
    base = scores.get(BASELINE)
    if base is None:
        return {}
    return {m: s for m, s in scores.items() if m != BASELINE and not s > base}


def _scores(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, float]:
    try:
        return {m: float(v) for m, v in con.execute(sql).fetchall() if v is not None}
    except duckdb.CatalogException:
        return {}


@asset_check(
    asset="leaderboard",
    pool=DUCKDB_POOL,
    automation_condition=AutomationCondition.eager(),
    description="Every trained model beats Popularity on NDCG@10, on test (leaderboard) and "
    "on validation (tuning); warns with the numbers when one does not.",
)
def models_beat_popularity(
    context: AssetCheckExecutionContext, warehouse: DuckDBResource
) -> AssetCheckResult:
    with warehouse.get_connection() as con:
        test = _scores(con, f"select model, ndcg_at_10 from {DUCKDB_SCHEMA}.leaderboard")
        valid = _scores(con, f"select model, best_ndcg_at_10 from {DUCKDB_SCHEMA}.tuned_params")
    if BASELINE not in test:
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.WARN,
            description="Popularity is not on the leaderboard: nothing to compare with",
        )
    behind = {
        "test": losers_to_baseline(test),
        "valid": losers_to_baseline(valid),
    }
    failing = sorted({m for split in behind.values() for m in split})
    return AssetCheckResult(
        passed=not failing,
        severity=AssetCheckSeverity.WARN,
        description=(
            f"{', '.join(failing)} not above Popularity on NDCG@10"
            if failing
            else "every model above Popularity on NDCG@10"
        ),
        metadata={
            "popular_test_ndcg_at_10": test[BASELINE],
            "popular_valid_ndcg_at_10": valid.get(BASELINE, float("nan")),
            "test_ndcg_at_10": {m: round(v, 5) for m, v in sorted(test.items())},
            "valid_ndcg_at_10": {m: round(v, 5) for m, v in sorted(valid.items())},
            "not_above_popular": failing,
        },
    )
