"""Publishing: the serving bundle written to Redis as a new version, switched atomically."""

import json
import time

import polars as pl
from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    Config,
    MetadataValue,
    asset,
)

from recsys_assets.core.serving_bundle import (
    BundleLimits,
    ModelCost,
    PublishedModel,
    build_bundle,
    latest_catalog,
)
from recsys_assets.defs.models.eval_lists import load_lists, matching, scored_lists
from recsys_assets.io_managers import TrainedModel
from recsys_assets.metadata import frame_metadata, markdown_table
from recsys_assets.resources import ModelStoreResource, RedisResource
from recsys_serving.redis_layout import publish_bundle


class PublishConfig(Config):
    """What to publish; the champion (best NDCG@10 on test) is the default model unless named."""

    default_model: str | None = None
    max_users: int = BundleLimits.max_users
    top_n: int = BundleLimits.top_n
    similar_n: int = BundleLimits.similar_n
    max_similar_items: int = BundleLimits.max_similar_items
    # wall-clock budget per model for its personal / neighbour lists; 0 = no cap
    max_seconds_per_model: float = BundleLimits.max_seconds_per_model or 0.0
    max_similar_seconds_per_model: float = BundleLimits.max_similar_seconds_per_model or 0.0
    # the default model's personal lists (it answers every request that names no model)
    max_seconds_default_model: float = BundleLimits.max_seconds_default_model or 0.0
    ab_control: str | None = None
    ab_treatment: str | None = None
    ab_treatment_share: float = 0.5


@asset(
    group_name="serving",
    # every model partition: the leaderboard decides which of them are published
    ins={"trained_model": AssetIn(partition_mapping=AllPartitionMapping())},
    # read directly (recsys.eval_recommendations): the test users' lists of the scored versions
    deps=[AssetDep("eval_recommendations", partition_mapping=AllPartitionMapping())],
    kinds={"redis", "duckdb"},
)
def serving_bundle(
    context: AssetExecutionContext,
    config: PublishConfig,
    redis: RedisResource,
    model_store: ModelStoreResource,
    trained_model: dict[str, TrainedModel],
    leaderboard: pl.DataFrame,
    splits: pl.DataFrame,
    item_catalog: pl.DataFrame,
    item_property_history: pl.DataFrame,
    category_tree: pl.DataFrame,
) -> pl.DataFrame:
    """Every trained model's lists, neighbours, popularity, histories and item data in Redis.

    Item data (category, price, availability) is the newest snapshot of the property files, not
    ``item_catalog``'s values at the split: the service must show what can be bought now.

    A complete new version is written under its own prefix before one pointer key is switched, so
    the service never sees half a bundle; a failed publish leaves the previous version serving.
    """
    models = {
        name: PublishedModel(
            model=trained.model,
            version=trained.version,
            trained_at=str(trained.info.get("trained_at", trained.created_at.isoformat())),
            metrics={k: float(v) for k, v in trained.metrics.items()},
            params=trained.params,
            sources={k: int(v) for k, v in (trained.info.get("source_versions") or {}).items()},
        )
        for name, trained in published_models(trained_model, leaderboard).items()
    }
    default = config.default_model or str(leaderboard["model"][0])
    experiment = None
    if config.ab_control and config.ab_treatment:
        experiment = {
            "name": f"{config.ab_control}_vs_{config.ab_treatment}",
            "control": config.ab_control,
            "treatment": config.ab_treatment,
            "treatment_share": config.ab_treatment_share,
        }
    limits = BundleLimits(
        top_n=config.top_n,
        similar_n=config.similar_n,
        max_users=config.max_users,
        max_similar_items=config.max_similar_items,
        max_seconds_per_model=config.max_seconds_per_model or None,
        max_seconds_default_model=config.max_seconds_default_model or None,
        max_similar_seconds_per_model=config.max_similar_seconds_per_model or None,
    )
    context.log.info(
        f"building the serving bundle: {len(models)} models ({', '.join(models)}), "
        f"default {default}, personal lists for up to {limits.max_users:,} users "
        f"and {_budget(limits.max_seconds_per_model)} per model"
    )
    start = time.perf_counter()
    catalog = latest_catalog(item_property_history, category_tree, item_catalog["item_id"])
    # every test user's list as the model's evaluation made it, when it scored this version
    versions = {name: pm.version for name, pm in models.items()}
    reusable = set(matching(versions, scored_lists(context.instance, versions), limits.top_n))
    context.log.info(
        f"personal lists of the test users from the evaluation of {sorted(reusable) or 'none'}"
    )
    built = build_bundle(
        models,
        splits,
        catalog,
        default,
        limits=limits,
        ab_experiment=experiment,
        category_tree=category_tree,
        stored_lists=lambda name: (
            load_lists(model_store.database, model_store.schema_name, name, limits.top_n)
            if name in reusable
            else None
        ),
    )
    bundle = built.bundle
    context.log.info(f"built the serving bundle in {time.perf_counter() - start:.1f} s")
    client = redis.reachable_client()
    try:
        report = publish_bundle(client, bundle, prefix=redis.prefix)
    finally:
        client.close()  # as ui_reports does: one connection pool per publish, not left open
    context.log.info(
        f"published version {report.version} to Redis: {report.keys:,} keys, "
        f"{report.payload_bytes / 2**20:.1f} MiB in {report.seconds:.1f} s"
    )
    table = pl.DataFrame(
        {
            "version": [report.version],
            "previous_version": [report.previous],
            "default_model": [default],
            "models": [json.dumps(bundle.model_names)],
            "users_with_lists": [int(max(len(m.user_ids) for m in bundle.models))],
            "keys": [report.keys],
            "payload_bytes": [report.payload_bytes],
            "redis_bytes": [report.redis_bytes],
            "seconds": [report.seconds],
            "published_at": [bundle.created_at],
        }
    )
    context.add_output_metadata(
        frame_metadata(
            table,
            version=report.version,
            redis_url=redis.url.split("@")[-1],
            prefix=redis.prefix,
            bytes_per_user_list=round(report.bytes_per_user_list, 1),
            family_bytes=report.family_bytes,
            deleted_versions=report.deleted_versions,
            redis_memory=MetadataValue.text(f"{report.redis_bytes / 2**20:.1f} MiB"),
            catalog_as_of=MetadataValue.timestamp(int(catalog["as_of"][0]) / 1000)
            if catalog.height
            else MetadataValue.text("no item data"),
            items_available_now=int((catalog["available"] == 1).sum()),
            items_available_at_split=int((item_catalog["available"] == 1).sum()),
            # per model: users precomputed / cut by the time cap and the seconds it cost; the
            # users cut are answered online from their history and the neighbour lists
            model_costs=MetadataValue.md(_cost_table(built.costs)),
            users_cut_by_time_cap=MetadataValue.json({c.model: c.users_cut for c in built.costs}),
            shared_seconds=MetadataValue.json(
                {k: round(v, 2) for k, v in built.shared_seconds.items()}
            ),
        )
    )
    return table


def _budget(seconds: float | None) -> str:
    return "no time cap" if seconds is None else f"a {seconds:.0f} s cap"


def _cost_table(costs: list[ModelCost]) -> str:
    return markdown_table(pl.DataFrame([c.as_dict() for c in costs]), max_rows=len(costs))


def published_models(
    trained: dict[str, TrainedModel], leaderboard: pl.DataFrame
) -> dict[str, TrainedModel]:
    """The leaderboard's models, each the very version it scored (so the published metrics and
    the champion are those of the served model); a model retrained since is a clear error."""
    chosen = {}
    for row in leaderboard.select("model", "model_version").iter_rows(named=True):
        name, scored = row["model"], row["model_version"]
        latest = trained.get(name)
        if latest is None or latest.version != scored:
            found = "no trained version" if latest is None else f"version {latest.version}"
            raise ValueError(
                f"the leaderboard scored {name} version {scored} but trained_model has {found}: "
                f"materialise eval_recommendations and model_metrics for {name}, then leaderboard"
            )
        chosen[name] = latest
    return chosen
