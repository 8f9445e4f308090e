"""Jobs of the models domain: one model's tuning→metrics (per partition), then the leaderboard."""

from dagster import AssetSelection, define_asset_job
from dagster_mlflow import end_mlflow_on_run_finished

models_job = define_asset_job(
    "models_job",
    selection=AssetSelection.assets(
        "tuned_params", "trained_model", "eval_recommendations", "model_metrics"
    ),
    hooks={end_mlflow_on_run_finished},
    description="Tune, train, list and score one model (one partition per model).",
)
leaderboard_job = define_asset_job(
    "leaderboard_job",
    selection=AssetSelection.assets("session_metrics", "leaderboard"),
    hooks={end_mlflow_on_run_finished},
)
