"""The service answers from what the graph published: its lists equal the evaluated lists."""

from __future__ import annotations

import polars as pl
from litestar.testing import TestClient


def test_service_recommend_equals_eval_recommendations(pipeline_run, warehouse):
    from recsys_serving.app import create_app
    from recsys_serving.settings import Settings as ServingSettings

    settings, _ = pipeline_run
    evals = pl.from_arrow(
        warehouse.sql(
            "select model, user_id, rank, item_id from recsys.eval_recommendations"
        ).arrow()
    )
    versions = dict(
        warehouse.sql("select model, model_version from recsys.model_metrics").fetchall()
    )
    app = create_app(
        ServingSettings(
            redis_url=settings.redis_url, prefix=settings.redis_prefix, listen_pubsub=False
        )
    )
    compared = 0
    with TestClient(app) as client:
        models = client.get("/api/v1/models").json()
        published = {m["name"]: m for m in models["models"]}
        assert set(published) == set(versions)
        for model, version in versions.items():
            assert str(published[model]["version"]) == str(version)
            users = evals.filter(pl.col("model") == model)["user_id"].unique().sort()
            sample = users.sample(min(25, users.len()), seed=1).to_list()
            for user in sample:
                expected = (
                    evals.filter((pl.col("model") == model) & (pl.col("user_id") == user))
                    .sort("rank")
                    .head(10)["item_id"]
                    .to_list()
                )
                resp = client.post(
                    "/api/v1/recommend",
                    json={"user_id": user, "n_recommendations": 10, "model": model},
                )
                assert resp.status_code in (200, 201), resp.text
                body = resp.json()
                got = [r["item_id"] for r in body["recommendations"]]
                assert len(expected) == 10 and got == expected, (model, user)
                compared += 1
                assert body["model"] == model and body["source"] == "personal"
    assert compared >= 4 * 20  # every published model, a real sample of users each
