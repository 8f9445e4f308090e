"""Model name (the Dagster partition key) → recommender class. Add a model with one line."""

from __future__ import annotations

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
