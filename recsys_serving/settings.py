"""Service settings, read from the environment once per app."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from recsys_serving.redis_layout.clients import parse_redis_url

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
MAX_RECOMMENDATIONS = 100  # the published list length N


def _float(env: dict, name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}: not a number: {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from the environment.

    REDIS_URL (default redis://127.0.0.1:6379/0, where ``python -m recsys_devtools.redis_server``
    starts one; ``redis+cluster://host:port`` for a Redis Cluster, see
    :mod:`recsys_serving.redis_layout.clients`), RECSYS_REDIS_PREFIX ("recsys"),
    RECSYS_ADMIN_TOKEN (admin endpoints refused when unset), RECSYS_AB_EXPERIMENT (JSON
    {"name","control","treatment","treatment_share"}), RECSYS_CACHE_SIZE (decoded lists kept in
    process, 100000), RECSYS_STATE_TTL (seconds a read of the version pointer is trusted between
    pub/sub notifications, 1.0; 0 reads it on every request), RECSYS_REDIS_TIMEOUT (socket
    timeouts, 0.5 s), RECSYS_FEEDBACK_MAXLEN (1000000).
    """

    redis_url: str = DEFAULT_REDIS_URL
    prefix: str = "recsys"
    admin_token: str | None = None
    ab_experiment: dict | None = None
    cache_size: int = 100_000
    state_ttl: float = 1.0
    redis_timeout: float = 0.5
    redis_max_connections: int = 64
    feedback_maxlen: int = 1_000_000
    max_recommendations: int = MAX_RECOMMENDATIONS
    listen_pubsub: bool = True

    @classmethod
    def from_env(cls, env: dict | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        ab_raw = env.get("RECSYS_AB_EXPERIMENT") or None
        try:
            ab = json.loads(ab_raw) if ab_raw else None
        except json.JSONDecodeError as exc:
            raise ValueError(f"environment variable RECSYS_AB_EXPERIMENT: bad JSON: {exc}") from exc
        if ab is not None and not isinstance(ab, dict):
            raise ValueError("environment variable RECSYS_AB_EXPERIMENT: want a JSON object")
        redis_url = env.get("REDIS_URL") or DEFAULT_REDIS_URL
        parse_redis_url(redis_url)  # a clear error naming REDIS_URL now, not at the first request
        return cls(
            redis_url=redis_url,
            prefix=env.get("RECSYS_REDIS_PREFIX") or "recsys",
            admin_token=env.get("RECSYS_ADMIN_TOKEN") or None,
            ab_experiment=ab,
            cache_size=int(_float(env, "RECSYS_CACHE_SIZE", 100_000)),
            state_ttl=_float(env, "RECSYS_STATE_TTL", 1.0),
            redis_timeout=_float(env, "RECSYS_REDIS_TIMEOUT", 0.5),
            feedback_maxlen=int(_float(env, "RECSYS_FEEDBACK_MAXLEN", 1_000_000)),
        )
