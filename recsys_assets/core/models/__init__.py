"""Recommenders sharing one interface (base.Recommender) and the registry that names them."""

from recsys_assets.core.models.als import ALSRecommender
from recsys_assets.core.models.base import Recommendations, Recommender
from recsys_assets.core.models.content_based import ContentBasedRecommender
from recsys_assets.core.models.item_knn import ItemKNNRecommender
from recsys_assets.core.models.popularity import PopularityRecommender
from recsys_assets.core.models.registry import (
    MODEL_REGISTRY,
    create_model,
    get_model_class,
    model_from_bytes,
)

__all__ = [
    "MODEL_REGISTRY",
    "ALSRecommender",
    "ContentBasedRecommender",
    "ItemKNNRecommender",
    "PopularityRecommender",
    "Recommendations",
    "Recommender",
    "create_model",
    "get_model_class",
    "model_from_bytes",
]
