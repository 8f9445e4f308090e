"""Asset checks of the serving domain: does Redis serve the models the graph last trained?

After a publish, the version behind the pointer must carry, for every model, the newest version
in the model store. If not, the service answers from stale models (a publish failed after
training, or someone rolled back): an error, with both versions per model in the metadata.
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AutomationCondition,
    asset_check,
)

from recsys_assets.resources import ModelStoreResource, RedisResource


def published_model_versions(client, prefix: str) -> tuple[str | None, dict[str, str]]:
    """The current published version and the model versions inside it."""
    from recsys_serving.redis_layout.codec import decode_meta
    from recsys_serving.redis_layout.keys import Keys

    keys = Keys(prefix)
    current = client.get(keys.current)
    if current is None:
        return None, {}
    current = current.decode()
    raw = client.get(keys.meta(current))
    meta = decode_meta(raw) if raw else {}
    return current, {m["name"]: str(m["version"]) for m in meta.get("models", [])}


def version_mismatches(published: dict[str, str], latest: dict[str, str]) -> dict[str, dict]:
    return {
        name: {"latest_trained": version, "published": published.get(name)}
        for name, version in sorted(latest.items())
        if published.get(name) != version
    }


@asset_check(
    asset="serving_bundle",
    # reads the model store (DuckDB)
    automation_condition=AutomationCondition.eager(),
    description="The version Redis serves holds the latest trained version of every model.",
)
def published_models_are_latest(
    context: AssetCheckExecutionContext, redis: RedisResource, model_store: ModelStoreResource
) -> AssetCheckResult:
    versions = model_store.store.versions()
    latest = (
        {
            str(m): str(v)
            for m, v in versions.group_by("model").agg(versions["version"].max()).iter_rows()
        }
        if versions.height
        else {}
    )
    client = redis.reachable_client()
    try:
        current, published = published_model_versions(client, redis.prefix)
    finally:
        client.close()
    mismatches = version_mismatches(published, latest)
    return AssetCheckResult(
        passed=current is not None and not mismatches,
        severity=AssetCheckSeverity.ERROR,
        description=(
            "nothing published"
            if current is None
            else f"stale in Redis: {', '.join(mismatches)}"
            if mismatches
            else f"version {current} serves the latest trained models"
        ),
        metadata={
            "published_version": current or "",
            "published_models": published,
            "latest_trained": latest,
            "mismatches": mismatches,
        },
    )
