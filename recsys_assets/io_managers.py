"""The DuckDB-backed model store as a Dagster IO manager (one versioned row per training run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext

from recsys_assets.core.models.store import ModelStore


@dataclass
class TrainedModel:
    """What ``trained_model`` returns and its consumers receive: the model and its provenance."""

    name: str
    model: Any  # a recsys_assets.core.models.base.Recommender
    train_seconds: float
    info: dict[str, Any] = field(default_factory=dict)
    version: int | None = None  # set by the store


class ModelStoreIOManager(ConfigurableIOManager):
    """Stores each output as a new version in ``{schema}.model_store``; loads the latest one.

    An input can pin an older version with ``AssetIn(metadata={"model_version": N})``; a version
    that does not exist is a clear ``ModelVersionNotFoundError``.
    """

    database: str
    schema_name: str = "recsys"

    @property
    def store(self) -> ModelStore:
        return ModelStore(self.database, schema=self.schema_name)

    def handle_output(self, context: OutputContext, obj: TrainedModel) -> None:
        payload = obj.model.to_bytes()
        info = {**obj.info, "train_seconds": obj.train_seconds, "dagster_run_id": context.run_id}
        version = self.store.save(obj.name, payload, dict(obj.model.params), info=info)
        obj.version = version
        context.add_output_metadata(
            {
                "model_version": version,
                "size_bytes": MetadataValue.int(len(payload)),
                "store_table": f"{self.schema_name}.model_store",
            }
        )

    def load_input(self, context: InputContext) -> TrainedModel:
        from recsys_assets.core.models.registry import model_from_bytes

        name = context.asset_partition_key
        version = (context.definition_metadata or {}).get("model_version")
        stored = self.store.load(name, version)
        return TrainedModel(
            name=name,
            model=model_from_bytes(name, stored.payload),
            train_seconds=float(stored.info.get("train_seconds", float("nan"))),
            info=stored.info,
            version=stored.version,
        )
