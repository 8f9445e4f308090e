"""Asset checks on the pipeline's real output: models vs Popularity, Redis vs the model store."""

from __future__ import annotations

import dagster as dg
import pytest

from recsys_assets.defs.models.checks import losers_to_baseline, models_beat_popularity
from recsys_assets.defs.serving.checks import published_models_are_latest, version_mismatches


def test_loser_and_mismatch_rules():
    assert losers_to_baseline({"popular": 0.1, "als": 0.2, "ncf": 0.1}) == {"ncf": 0.1}
    assert losers_to_baseline({"als": 0.2}) == {}
    assert version_mismatches({"als": "3"}, {"als": "3", "ncf": "2"}) == {
        "ncf": {"latest_trained": "2", "published": None}
    }


@pytest.fixture
def resources(pipeline_run):
    from dagster_duckdb import DuckDBResource

    from recsys_assets.resources import ModelStoreResource, RedisResource

    settings, _ = pipeline_run
    database = str(settings.duckdb_path)
    return {
        "warehouse": DuckDBResource(database=database),
        "model_store": ModelStoreResource(database=database),
        "redis": RedisResource(url=settings.redis_url, prefix=settings.redis_prefix),
    }


def test_models_beat_popularity_on_the_pipeline_run(resources):
    result = models_beat_popularity(
        dg.build_asset_check_context(), warehouse=resources["warehouse"]
    )
    meta = result.metadata
    print(result.description, meta["test_ndcg_at_10"].data, meta["valid_ndcg_at_10"].data)
    assert result.severity == dg.AssetCheckSeverity.WARN
    assert meta["popular_test_ndcg_at_10"].value > 0
    test = meta["test_ndcg_at_10"].data
    assert set(meta["not_above_popular"].data) == {
        m for m, v in test.items() if m != "popular" and v <= test["popular"]
    } | {
        m
        for m, v in meta["valid_ndcg_at_10"].data.items()
        if m != "popular" and v <= meta["valid_ndcg_at_10"].data.get("popular", -1)
    }
    assert result.passed == (not meta["not_above_popular"].data)


def test_published_version_is_the_latest_trained(resources, r):
    from recsys_serving.redis_layout.keys import Keys

    check = published_models_are_latest
    kwargs = {"redis": resources["redis"], "model_store": resources["model_store"]}
    result = check(dg.build_asset_check_context(), **kwargs)
    assert result.passed, result.metadata
    assert result.severity == dg.AssetCheckSeverity.ERROR

    # point Redis at no version: the check fails, naming what is published and what is latest
    keys = Keys(resources["redis"].prefix)
    current = r.get(keys.current)
    r.delete(keys.current)
    try:
        failed = check(dg.build_asset_check_context(), **kwargs)
    finally:
        r.set(keys.current, current)
    assert not failed.passed and failed.description == "nothing published"
