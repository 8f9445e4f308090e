"""Model name (the Dagster partition key) → recommender class. Add a model with one line."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from recsys_assets.core.models.als import ALSRecommender
from recsys_assets.core.models.base import Recommender
from recsys_assets.core.models.content_based import ContentBasedRecommender
from recsys_assets.core.models.gru4rec import GRU4RecRecommender
from recsys_assets.core.models.hybrid import HybridRecommender
from recsys_assets.core.models.item_knn import ItemKNNRecommender
from recsys_assets.core.models.ncf import NCFRecommender
from recsys_assets.core.models.popularity import PopularityRecommender
from recsys_assets.core.models.serialization import unpack

MODEL_REGISTRY: dict[str, type[Recommender]] = {
    cls.name: cls
    for cls in (
        PopularityRecommender,
        ALSRecommender,
        ItemKNNRecommender,
        ContentBasedRecommender,
        NCFRecommender,
        GRU4RecRecommender,
        # last: its default sources are every model registered besides itself
        HybridRecommender,
    )
}


def get_model_class(name: str) -> type[Recommender]:
    """The class registered under ``name``; ValueError listing the valid names otherwise."""
    try:
        return MODEL_REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; valid models: {sorted(MODEL_REGISTRY)}"
        ) from None


def create_model(name: str, params: dict[str, Any] | None = None) -> Recommender:
    """A new, unfitted model: ``params`` merged over the class defaults."""
    return get_model_class(name)(**(params or {}))


def model_from_bytes(name: str, data: bytes) -> Recommender:
    """Load a model of class ``name`` from ``to_bytes`` output."""
    return get_model_class(name).from_bytes(data)


def load_model(data: bytes) -> Recommender:
    """Load ``to_bytes`` output of any registered model, dispatching on the name stored in it."""
    _, meta = unpack(data)
    return model_from_bytes(str(meta.get("model")), data)


def parse_params_json(
    text: str, registered: Iterable[str], field: str = "params_json"
) -> dict[str, dict[str, Any]]:
    """Per-model parameter overrides ``{"model": {param: value}}`` from a config's JSON text.

    Errors name the config ``field``; model names are checked against ``registered``.
    """
    try:
        table = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"config {field} is not valid JSON: {exc}") from None
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ValueError(f"config {field} must map model names to parameter objects, got {table!r}")
    unknown = sorted(set(table) - set(registered))
    if unknown:
        raise ValueError(
            f"config {field} names unknown model(s) {unknown}; valid models: {sorted(registered)}"
        )
    return table
