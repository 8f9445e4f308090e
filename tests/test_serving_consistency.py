"""The service answers from what the graph published: its lists equal the evaluated lists."""

from __future__ import annotations

import polars as pl
from litestar.testing import TestClient


def test_service_recommend_equals_eval_recommendations(pipeline_run, warehouse):
    from recsys_assets.core.models.registry import MODEL_REGISTRY
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
        assert set(published) == set(versions) == set(MODEL_REGISTRY)
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
    assert compared >= len(MODEL_REGISTRY) * 20  # every published model, a real sample of users


def test_service_session_answers_live_with_the_published_gru4rec(pipeline_run, warehouse):
    """/recommend/session runs the published GRU4Rec network: its top-10 equals the trained
    model's own ``recommend_session`` (the version the leaderboard scored)."""
    import numpy as np

    from recsys_assets.core.models.registry import model_from_bytes
    from recsys_serving.app import create_app
    from recsys_serving.settings import Settings as ServingSettings

    settings, _ = pipeline_run
    version = warehouse.sql(
        "select model_version from recsys.model_metrics where model = 'gru4rec'"
    ).fetchone()[0]
    payload = warehouse.execute(
        "select payload from recsys.model_store where model = 'gru4rec' and version = ?",
        [version],
    ).fetchone()[0]
    model = model_from_bytes("gru4rec", payload)
    # sessions of items the network was trained on (the others carry bias -inf)
    trained = model.item_ids[np.isfinite(model.export_numpy()["output_bias"])]
    rng = np.random.default_rng(3)
    sessions = [rng.choice(trained, size=int(n), replace=False) for n in rng.integers(1, 6, 20)]
    expected = model.recommend_session(sessions, k=10, exclude_seen=True)
    app = create_app(
        ServingSettings(
            redis_url=settings.redis_url, prefix=settings.redis_prefix, listen_pubsub=False
        )
    )
    with TestClient(app) as client:
        for session, want, fallback in zip(
            sessions, expected.item_ids, expected.fallback, strict=True
        ):
            resp = client.post(
                "/api/v1/recommend/session",
                json={"item_ids": session.tolist(), "n_recommendations": 10, "model": "gru4rec"},
            )
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["model"] == "gru4rec" and str(body["model_version"]) == str(version)
            assert not fallback and body["source"] == "session"
            assert [r["item_id"] for r in body["recommendations"]] == want.tolist()
