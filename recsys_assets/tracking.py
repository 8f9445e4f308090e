"""MLflow logging through dagster-mlflow's ``mlflow_tracking`` resource.

dagster-mlflow opens one MLflow run per Dagster run (found again by the ``dagster_run_id`` tag,
so multi-process steps share it). The helpers here prefix keys per asset so that tuning and
training of one model, logged into the same MLflow run, never collide on a parameter name.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

MLFLOW_EXPERIMENT = "recsys"  # every run of the graph logs into this MLflow experiment


def log_to_mlflow(
    mlf: Any,
    prefix: str,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
) -> None:
    """Log into the Dagster run's MLflow run through the ``mlflow`` resource (dagster-mlflow)."""
    if params:
        mlf.log_params({f"{prefix}.{k}": _param(v) for k, v in params.items()})
    if metrics:
        clean = {
            f"{prefix}.{k}": float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and math.isfinite(float(v))
        }
        mlf.log_metrics(clean)
    if tags:
        mlf.set_tags(dict(tags))


def end_active_mlflow_run() -> None:
    """Close the MLflow run of a finished in-process Dagster run.

    In a separate process per run (CLI, daemon) the process exit ends it; when several Dagster runs
    execute in one process (the main job, tests) the next run would otherwise log into this one.
    """
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None and mlflow.active_run() is not None:
        mlflow.end_run()


def _param(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    return value
