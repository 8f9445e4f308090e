"""Resources, chosen per environment in one place (see ``definitions.py``)."""

from __future__ import annotations

import fcntl
from pathlib import Path

from dagster import ConfigurableResource

from recsys_assets.core.model_store import ModelStore
from recsys_assets.core.schemas import CATEGORY_TREE_FILE, EVENTS_FILE, PROPERTIES_FILES


class RetailRocketSource(ConfigurableResource):
    """The folder holding the four RetailRocket files.

    When ``events.csv`` is missing and ``generate_if_missing`` is set, the synthetic generator
    (the embedded default) writes a data set there first, under a file lock so that two runs
    starting together do not both generate.
    """

    raw_dir: str
    generate_if_missing: bool = True
    scale: float = 0.05
    seed: int = 42

    def ensure(self) -> Path:
        raw = Path(self.raw_dir)
        if (raw / EVENTS_FILE).exists() or not self.generate_if_missing:
            return raw
        from recsys_assets.core.generator import GeneratorConfig, ensure_dataset

        raw.parent.mkdir(parents=True, exist_ok=True)
        with open(raw.parent / f".{raw.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            ensure_dataset(raw, GeneratorConfig(scale=self.scale, seed=self.seed))
        return raw

    @property
    def events_path(self) -> Path:
        return self.ensure() / EVENTS_FILE

    @property
    def properties_paths(self) -> list[Path]:
        raw = self.ensure()
        return [raw / name for name in PROPERTIES_FILES]

    @property
    def category_tree_path(self) -> Path:
        return self.ensure() / CATEGORY_TREE_FILE


class ModelStoreResource(ConfigurableResource):
    """Direct access to the versioned model store, for assets that read models by name."""

    database: str
    schema_name: str = "recsys"

    @property
    def store(self) -> ModelStore:
        return ModelStore(self.database, schema=self.schema_name)


class RedisResource(ConfigurableResource):
    """The Redis that the service reads (``REDIS_URL``), and the key prefix of this deployment."""

    url: str
    prefix: str = "recsys"

    def client(self):
        import redis

        # Bytes responses: the layout stores packed arrays. Short timeouts: a missing Redis should
        # fail the publish quickly with a clear message, not hang the run.
        return redis.Redis.from_url(self.url, socket_timeout=10, socket_connect_timeout=3)
