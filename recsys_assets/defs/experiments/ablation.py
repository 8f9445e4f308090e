"""Ablation report: variants of the models, trained and scored as the model assets do.

The variant spec and the runner are pure code (``recsys_assets.core.experiments.ablation``);
this asset picks the variants from its run config, runs them and attaches the report's table and
a plot of the deltas to its materialisation.
"""

import time

import polars as pl
from dagster import AssetExecutionContext, Config, MetadataValue, asset

from recsys_assets.core.analytics.plots import figure_to_markdown
from recsys_assets.core.experiments import ablation
from recsys_assets.core.models.registry import MODEL_REGISTRY
from recsys_assets.metadata import frame_metadata, markdown_table

GROUP = "experiments"


class AblationConfig(Config):
    """Which variants, on how many test users.

    Default (cheap): tier ``default`` (ALS with/without event weights, ItemKNN k 10/50/200,
    ContentBased with/without ancestors) on 2,000 sampled test users, trained on those users
    and others up to ``max_train_users`` (a seeded sample; 0: every user). At scale 1.0 the
    report on every user took 677 s and 6.2 GB in the main job; on 100,000 users (7% of
    them) it is a fraction of that, and the deltas compare the variants on the same users.
    ``complete``: every tier
    (also ``slow``: the Hybrid without each source and feature group, GRU4Rec on carts and
    purchases only; and ``extra``) on all test users. ``variants`` (``model:name``) picks
    variants by name, whatever their tier; ``models`` keeps only those base models.
    """

    tiers: list[str] = ["default"]
    variants: list[str] | None = None
    models: list[str] | None = None
    complete: bool = False
    max_users: int = 2000  # 0: every test user
    max_train_users: int = 100_000  # 0: every user with train+valid history
    seed: int = 0
    # per-model parameter overrides for the base and its variants, e.g. '{"gru4rec":
    # {"n_epochs": 2}}' (quick runs); the models' defaults otherwise, never re-tuned
    model_params_json: str = "{}"


@asset(group_name=GROUP, kinds={"duckdb", "polars"})
def ablation_report(
    context: AssetExecutionContext,
    config: AblationConfig,
    splits: pl.DataFrame,
    item_catalog: pl.DataFrame,
    category_tree: pl.DataFrame,
) -> pl.DataFrame:
    """Each variant's test metrics and their change against its model's base configuration
    (``recsys.ablation_report``)."""
    registered = list(MODEL_REGISTRY)
    variants = ablation.select_variants(
        ablation.default_variants(registered),
        tiers=list(ablation.TIERS) if config.complete else config.tiers,
        models=config.models,
        keys=config.variants,
    )
    max_users = None if config.complete or config.max_users <= 0 else config.max_users
    max_train_users = (
        None if config.complete or config.max_train_users <= 0 else config.max_train_users
    )
    model_params = ablation.parse_model_params(config.model_params_json, registered)
    context.log.info(
        f"ablation: {len(variants)} configurations ({', '.join(v.key for v in variants)}) on "
        f"{'all' if max_users is None else f'at most {max_users:,}'} test users, trained on "
        f"{'all users' if max_train_users is None else f'at most {max_train_users:,} users'}"
    )

    def log_row(i: int, n: int, row: dict) -> None:
        if row["error"]:
            context.log.warning(f"ablation {i}/{n} {row['model']}:{row['variant']}: {row['error']}")
            return
        context.log.info(
            f"ablation {i}/{n} {row['model']}:{row['variant']}: ndcg@10={row['ndcg_at_10']:.4f} "
            f"recall@10={row['recall_at_10']:.4f} (trained in {row['train_seconds']:.1f} s, "
            f"{row['users_evaluated']:,} users)"
        )

    start = time.perf_counter()
    table = ablation.run_ablation(
        variants,
        splits,
        item_catalog,
        category_tree,
        max_users=max_users,
        max_train_users=max_train_users,
        seed=config.seed,
        model_params=model_params,
        on_row=log_row,
    )
    seconds = time.perf_counter() - start
    failed = table.filter(pl.col("error").is_not_null())
    context.add_output_metadata(
        frame_metadata(
            table,
            results=MetadataValue.md(markdown_table(ablation.summary_table(table), max_rows=60)),
            delta_plot=MetadataValue.md(
                figure_to_markdown(ablation.plot_deltas(table), "Ablation: NDCG@10 deltas")
            ),
            variants=[v.key for v in variants],
            users_evaluated=int(table["users_evaluated"].max() or 0),
            train_users=int(table["train_users"].max() or 0),
            failed_variants={
                f"{m}:{v}": e for m, v, e in failed.select("model", "variant", "error").iter_rows()
            },
            seconds=seconds,
        )
    )
    return table
