"""A published GRU4Rec held in the service process: request item ids in, top-n items out.

Built once per published network (the store keys it by the weights' digest) from the arrays in
Redis; every request then costs the forward pass of :mod:`recsys_serving.gru_forward` over its
items, one (n_items x h) matrix-vector product for the scores and an ``argpartition``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys_serving.gru_forward import check_weights, next_item_scores, top_k
from recsys_serving.redis_layout.weights import ITEM_IDS


@dataclass(frozen=True)
class LiveAnswer:
    items: np.ndarray  # int64 external ids, best first
    scores: np.ndarray  # float32
    ignored: list[int]  # request ids the network does not know (they did not count)


@dataclass(frozen=True)
class LiveGru:
    weights: dict[str, np.ndarray]
    item_ids: np.ndarray  # int64, column -> external id
    sorted_ids: np.ndarray  # item_ids ascending, for the id -> column lookup
    sorted_cols: np.ndarray
    usable: np.ndarray  # bool per column: trained (finite bias); others are never inputs

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> LiveGru:
        weights = {k: v for k, v in arrays.items() if k != ITEM_IDS}
        n_items = check_weights(weights, "published weights")
        ids = np.asarray(arrays[ITEM_IDS], dtype=np.int64)
        if ids.shape != (n_items,):
            raise ValueError(f"published weights: {ids.size} item ids for {n_items} items")
        order = np.argsort(ids, kind="stable")
        # Items the network never saw carry bias -inf (see GRU4RecRecommender): they are no
        # input and never an answer, exactly as in the torch model.
        usable = np.isfinite(weights["output_bias"])
        return cls(weights, ids, ids[order], order, usable)

    @property
    def n_items(self) -> int:
        return int(self.item_ids.size)

    def columns(self, item_ids: np.ndarray) -> np.ndarray:
        """Column of each external id, -1 where unknown or untrained."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if not self.n_items:
            return np.full(item_ids.shape, -1, np.int64)
        pos = np.minimum(np.searchsorted(self.sorted_ids, item_ids), self.n_items - 1)
        cols = np.where(self.sorted_ids[pos] == item_ids, self.sorted_cols[pos], -1)
        cols[cols >= 0] = np.where(self.usable[cols[cols >= 0]], cols[cols >= 0], -1)
        return cols

    def recommend(self, item_ids: list[int], n: int, exclude_seen: bool) -> LiveAnswer:
        """Next-item top-``n`` after ``item_ids`` (oldest first); unknown ids are skipped.

        No known item: an empty answer (the caller falls back to popularity, as the torch
        model does for such a session).
        """
        ids = np.asarray(item_ids, dtype=np.int64)
        cols = self.columns(ids)
        known = cols >= 0
        ignored = list(dict.fromkeys(ids[~known].tolist()))
        if not known.any():
            return LiveAnswer(np.zeros(0, np.int64), np.zeros(0, np.float32), ignored)
        scores = next_item_scores(self.weights, cols[known])
        if exclude_seen:
            scores[cols[known]] = -np.inf
        top, vals = top_k(scores[None, :], n)
        top, vals = top[0], vals[0]
        finite = np.isfinite(vals)  # untrained (and excluded) items are never an answer
        return LiveAnswer(self.item_ids[top[finite]], vals[finite].astype(np.float32), ignored)
