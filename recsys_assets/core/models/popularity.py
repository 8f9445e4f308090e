"""Popularity baseline: summed interaction weight per item, globally or over a recent window."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys_assets.core.data.training_data import MS_PER_DAY, TrainingData
from recsys_assets.core.models.base import Recommender

if TYPE_CHECKING:
    import optuna

# Items with the same windowed weight are ordered by all-time weight; the term is scaled so it
# stays below the smallest weight difference (event weights are >= 1 apart in practice).
_GLOBAL_TIEBREAK = 1e-3


class PopularityRecommender(Recommender):
    """Most popular items not yet seen; ``window_days`` counts only the last N days of training."""

    name: ClassVar[str] = "popular"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"window_days": None}

    @classmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        return {"window_days": trial.suggest_categorical("window_days", [None, 1, 3, 7, 14, 30])}

    def _validate_params(self) -> None:
        w = self.params["window_days"]
        if w is not None and not (isinstance(w, int | float) and w > 0):
            raise ValueError(f"window_days must be a positive number or None, got {w!r}")

    def _fallback_scores(self, data: TrainingData) -> np.ndarray:
        n = data.n_items
        total = np.bincount(data.event_item, weights=data.event_weight, minlength=n)
        window = self.params["window_days"]
        if window is None:
            return total.astype(np.float32)
        recent = data.event_time >= data.reference_ms - window * MS_PER_DAY
        windowed = np.bincount(
            data.event_item[recent], weights=data.event_weight[recent], minlength=n
        )
        top = total.max() if total.size else 0.0
        tiebreak = total / top if top > 0 else total
        return (windowed + _GLOBAL_TIEBREAK * tiebreak).astype(np.float32)

    def _fit(self, data: TrainingData) -> None:
        """Nothing beyond the popularity vector the base class already keeps."""

    def _score(self, user_rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self._popularity, (user_rows.size, self.n_items)).copy()

    def _recommend_rows(
        self, user_rows: np.ndarray, width: int, exclude_seen: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        # one ranking for everyone: skip the dense (users × catalogue) block entirely
        if exclude_seen:
            return self._popular_topk_excluding(self._seen[user_rows], width)
        cols = np.broadcast_to(self._popular_order()[:width], (user_rows.size, width))
        return cols.copy(), self._popularity[cols]

    def _similar_rows(self, item_cols: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        itself = sp.csr_matrix(
            (np.ones(item_cols.size, np.float32), (np.arange(item_cols.size), item_cols)),
            shape=(item_cols.size, self.n_items),
        )
        return self._popular_topk_excluding(itself, width)
