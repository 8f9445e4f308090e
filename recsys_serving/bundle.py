"""What the offline graph hands to the publisher: every list the service will serve, as arrays.

The Dagster asset ``serving_bundle`` builds a :class:`ServingBundle` from the trained models and
passes it to :func:`recsys_serving.redis_layout.publish_bundle`. Nothing here talks to Redis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

EVENT_CODES = ("view", "addtocart", "transaction")  # history event code = index in this tuple


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class GruWeights:
    """A session model's network, published so that the service can run it live (numpy only).

    ``arrays`` follows the layout of :mod:`recsys_serving.gru_forward` (what
    ``GRU4RecRecommender.export_numpy()`` returns); ``item_ids`` maps its columns to external ids.
    """

    item_ids: np.ndarray  # int64 (n_items,), column -> external item id
    arrays: dict[str, np.ndarray]


@dataclass
class ModelLists:
    """One trained model's precomputed lists (external ids; ``-1`` pads short rows)."""

    name: str
    version: str  # model-store version
    trained_at: str  # ISO time
    metrics: dict[str, float]
    params: dict
    user_ids: np.ndarray  # int64 (n_users,)
    items: np.ndarray  # int64 (n_users, N), best first, -1 padded
    scores: np.ndarray  # float32 (n_users, N)
    similar_item_ids: np.ndarray | None = None  # int64 (n_items,)
    similar_items: np.ndarray | None = None  # int64 (n_items, M), -1 padded
    similar_scores: np.ndarray | None = None  # float32 (n_items, M)
    gru: GruWeights | None = None  # answers session requests live when present


@dataclass
class ServingBundle:
    """A complete, self-consistent snapshot of everything the service reads."""

    models: list[ModelLists]
    default_model: str
    popular_items: np.ndarray  # int64, most popular first
    popular_scores: np.ndarray  # float32, descending
    popular_by_category: dict[int, tuple[np.ndarray, np.ndarray]]  # category id -> (items, scores)
    history_user_ids: np.ndarray  # int64 (n_hist_users,), one row per user
    history_indptr: np.ndarray  # int64 (n_hist_users + 1,), CSR offsets into the arrays below
    history_items: np.ndarray  # int64, newest first within a user, at most 50 per user
    history_events: np.ndarray  # str ("view"/"addtocart"/"transaction") or int8 codes (EVENT_CODES)
    history_timestamps: np.ndarray  # int64 Unix ms
    item_ids: np.ndarray  # int64 (n_items,)
    item_category: np.ndarray  # int64, -1 unknown
    item_price: np.ndarray  # float, nan unknown
    item_available: np.ndarray  # int8 1/0, -1 unknown
    ab_experiment: dict | None = None  # {"name", "control", "treatment", "treatment_share"}
    created_at: str = field(default_factory=_now_iso)
    # The category tree (``category_tree.csv``): the service's category rules match an item when
    # its category or one of its ancestors is asked for. Empty: every category is its own root.
    category_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    category_parents: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # -1 root

    def model(self, name: str) -> ModelLists:
        """The model called ``name``; KeyError naming the published models otherwise."""
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"model {name!r} is not in the bundle (models: {self.model_names})")

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]
