"""``ab_test_report``: the champion against every challenger (and configured pairs), per metric."""

import time

import polars as pl
from dagster import AssetExecutionContext, AssetIn, Config, MetadataValue, asset

from recsys_assets.core.analytics.plots import figure_to_markdown
from recsys_assets.core.experiments.ab_report import ABSettings, ab_test_table, plan_comparisons
from recsys_assets.core.experiments.outcomes import outcome_matrix, per_user_outcomes
from recsys_assets.core.experiments.plots import plot_lifts
from recsys_assets.defs.experiments._inputs import (
    ALL_MODEL_LISTS,
    GROUP,
    SPLITS,
    check_list_positions,
)
from recsys_assets.metadata import frame_metadata, markdown_table

SUMMARY_COLUMNS = {
    "comparison": "comparison",
    "metric": "metric",
    "paired_mean_control": "control",
    "paired_mean_treatment": "treatment",
    "paired_lift": "lift",
    "lift_ci_low": "CI low",
    "lift_ci_high": "CI high",
    "paired_p_adjusted": "p adj (paired)",
    "paired_mde_rel": "MDE rel",
    "welch_p_value": "p (Welch)",
    "cuped_p_value": "p (CUPED)",
    "cuped_variance_reduction": "CUPED var. red.",
    "verdict": "verdict",
}


HOW_TO_READ = """\
- *lift* is the paired relative difference (treatment / control - 1) over all evaluated users,
  with its percentile bootstrap CI; *p adj* is the paired t-test p-value after the correction
  across every row of this report.
- *Welch* is the simulated A/B: users split by a seeded hash, each arm scored with one model;
  *CUPED* is the same test with pre-period activity as covariate.
- *not significant* with a difference below the *MDE* means the test could not have detected
  a difference that small at this sample size and power — not that there is none.
"""


class ABTestConfig(Config):
    """Significance level, power, correction and bootstrap of the offline A/B report."""

    k: int = 10
    alpha: float = 0.05
    power: float = 0.8
    correction: str = "holm"  # "holm" (family-wise) or "bh" (Benjamini–Hochberg, FDR)
    n_bootstrap: int = 2000
    confidence: float = 0.95
    seed: int = 0
    treatment_share: float = 0.5
    srm_threshold: float = 0.001
    # Extra comparisons beyond champion-vs-challenger, as "control:treatment".
    pairs: list[str] = []


@asset(
    group_name=GROUP,
    ins={"eval_recommendations": ALL_MODEL_LISTS, "splits": SPLITS, "leaderboard": AssetIn()},
    kinds={"duckdb", "polars", "scipy"},
)
def ab_test_report(
    context: AssetExecutionContext,
    config: ABTestConfig,
    eval_recommendations: pl.DataFrame,
    splits: pl.DataFrame,
    leaderboard: pl.DataFrame,
) -> pl.DataFrame:
    """Offline A/B tests (``recsys.ab_test_report``): Welch, paired, bootstrap CI, SRM, Holm/BH,
    MDE and CUPED for each comparison and metric (hit@K, NDCG@K, click, add-to-cart, purchase)."""
    check_list_positions(config.k)
    settings = ABSettings(
        alpha=config.alpha,
        power=config.power,
        correction=config.correction,
        n_bootstrap=config.n_bootstrap,
        confidence=config.confidence,
        seed=config.seed,
        treatment_share=config.treatment_share,
        srm_threshold=config.srm_threshold,
    )
    start = time.perf_counter()
    matrix = outcome_matrix(per_user_outcomes(eval_recommendations, splits, config.k), splits)
    ranked = leaderboard.sort("ndcg_at_10", descending=True)["model"].to_list()
    comparisons = plan_comparisons(ranked, matrix.models, config.pairs)
    context.log.info(
        f"A/B report: {len(comparisons)} comparison(s) x {len(matrix.outcomes)} metrics over "
        f"{len(matrix.user_ids):,} users, {settings.n_bootstrap} bootstrap resamples"
    )
    table = ab_test_table(matrix, comparisons, settings)
    seconds = time.perf_counter() - start
    summary = table.select([pl.col(c).alias(label) for c, label in SUMMARY_COLUMNS.items()])
    context.add_output_metadata(
        frame_metadata(
            table,
            champion=comparisons[0].control if comparisons else "",
            comparisons=[c.name for c in comparisons],
            users=len(matrix.user_ids),
            significant_rows=int(table["significant"].sum()),
            srm_mismatches=int(table["srm_mismatch"].sum()),
            seconds=seconds,
            results=MetadataValue.md(markdown_table(summary, max_rows=100)),
            lift_plot=MetadataValue.md(
                figure_to_markdown(plot_lifts(table), "Lift with bootstrap CIs")
            ),
            how_to_read=MetadataValue.md(HOW_TO_READ),
        )
    )
    return table
