"""Content-based: the user's (time-decayed) category profile against each item's category path."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys_assets.core.models.base import Recommender, normalize_rows
from recsys_assets.core.models.serialization import csr_from_arrays, csr_to_arrays
from recsys_assets.core.training_data import MS_PER_DAY, TrainingData

if TYPE_CHECKING:
    import optuna


def item_category_vectors(data: TrainingData, ancestor_weight: float) -> sp.csr_matrix:
    """(n_items, n_categories), unit rows: 1 on the item's category, ``ancestor_weight`` above.

    Items in sibling leaves then share their parent's weight, so a taste for one leaf spreads to
    its neighbours in the tree, less strongly than to the leaf itself.
    """
    n_items, n_cat = data.item_ancestors.shape
    known = np.flatnonzero(data.item_category >= 0)
    own = sp.csr_matrix(
        (np.ones(known.size, np.float32), (known, data.item_category[known])),
        shape=(n_items, n_cat),
    )
    vectors = own * (1.0 - ancestor_weight) + data.item_ancestors.astype(np.float32) * (
        ancestor_weight
    )
    vectors = sp.csr_matrix(vectors)
    vectors.eliminate_zeros()
    return normalize_rows(vectors)


class ContentBasedRecommender(Recommender):
    """Cosine of user category profile and item category vector + popularity within category."""

    name: ClassVar[str] = "content_based"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"half_life_days": 30.0, "ancestor_weight": 0.3, "popularity_weight": 0.05}

    @classmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "half_life_days": trial.suggest_float("half_life_days", 1.0, 180.0, log=True),
            "ancestor_weight": trial.suggest_float("ancestor_weight", 0.0, 1.0),
            "popularity_weight": trial.suggest_float("popularity_weight", 1e-3, 0.5, log=True),
        }

    def _validate_params(self) -> None:
        p = self.params
        hl = p["half_life_days"]
        if hl is not None and not hl > 0:
            raise ValueError(f"half_life_days must be > 0 or None, got {hl!r}")
        if not 0 <= p["ancestor_weight"] <= 1:
            raise ValueError(f"ancestor_weight must be in [0, 1], got {p['ancestor_weight']!r}")
        if not p["popularity_weight"] >= 0:
            raise ValueError(f"popularity_weight must be >= 0, got {p['popularity_weight']!r}")

    def _fit(self, data: TrainingData) -> None:
        p = self.params
        weight = data.event_weight.astype(np.float64)
        if p["half_life_days"] is not None:
            age_days = (data.reference_ms - data.event_time) / MS_PER_DAY
            weight = weight * np.exp2(-age_days / p["half_life_days"])
        decayed = sp.csr_matrix(
            (weight.astype(np.float32), (data.event_user, data.event_item)),
            shape=(data.n_users, data.n_items),
        )
        self.item_vectors = item_category_vectors(data, float(p["ancestor_weight"]))
        self.profiles = normalize_rows(decayed @ self.item_vectors)
        self.item_bonus = self._within_category_popularity(data.item_category)

    def _within_category_popularity(self, item_category: np.ndarray) -> np.ndarray:
        """``popularity_weight`` × item popularity / the top popularity in its category."""
        group = item_category.astype(np.int64) + 1  # unknown category (-1) is its own group
        top = np.zeros(group.max() + 1, dtype=np.float64)
        np.maximum.at(top, group, self._popularity)
        share = np.divide(
            self._popularity, top[group], out=np.zeros(group.size), where=top[group] > 0
        )
        return (self.params["popularity_weight"] * share).astype(np.float32)

    def _score(self, user_rows: np.ndarray) -> np.ndarray:
        # (items × cat) sparse @ (cat × users) dense is scipy's fast path; one transpose after
        profiles = self.profiles[user_rows].toarray().T
        scores = np.ascontiguousarray((self.item_vectors @ profiles).T, dtype=np.float32)
        scores += self.item_bonus
        return scores

    def _score_items(self, item_cols: np.ndarray) -> np.ndarray:
        vectors = self.item_vectors[item_cols].toarray().T
        scores = np.ascontiguousarray((self.item_vectors @ vectors).T, dtype=np.float32)
        scores += self.item_bonus
        return scores

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {
            **csr_to_arrays("item_vectors", self.item_vectors),
            **csr_to_arrays("profiles", self.profiles),
            "item_bonus": self.item_bonus,
        }

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_vectors = csr_from_arrays("item_vectors", arrays)
        self.profiles = csr_from_arrays("profiles", arrays)
        self.item_bonus = arrays["item_bonus"]
