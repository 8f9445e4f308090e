"""Item-based collaborative filtering: cosine similarity, top-``k`` neighbours per item.

The neighbour matrix comes from ``implicit``'s multi-threaded ``all_pairs_knn``: on the
scale-1.0 synthetic matrix (1.4M users × 235k items, 2.2M nnz, 2 cores) it takes ~1 s against
~14 s for a blocked ``scipy.sparse`` X.T @ X with a vectorised per-row top-k, with the same
neighbour cosines for every item (``benchmarks/bench_models.py --compare-scipy-knn``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys_assets.core.models.als import WEIGHTINGS, weight_interactions
from recsys_assets.core.models.base import Recommender
from recsys_assets.core.models.serialization import csr_from_arrays, csr_to_arrays
from recsys_assets.core.models.topk import topk_candidates
from recsys_assets.core.training_data import TrainingData

if TYPE_CHECKING:
    import optuna

# Items the neighbours do not reach score 0; at least this much of the normalised popularity
# orders them (and breaks exact ties) even with ``popularity_weight`` 0.
POPULARITY_TIEBREAK = 1e-6


def cosine_neighbours(
    user_item: sp.csr_matrix, k: int, num_threads: int = 0
) -> sp.csr_matrix:
    """(n_items, n_items) CSR: row i holds the cosine of item i to its ``k`` nearest items.

    The item itself is left out; items with fewer than ``k`` co-occurring items keep fewer.
    """
    from implicit._nearest_neighbours import all_pairs_knn

    n_items = user_item.shape[1]
    m = user_item.tocsr()
    norms = np.sqrt(np.bincount(m.indices, weights=np.square(m.data, dtype=np.float64),
                                minlength=n_items))
    norms[norms == 0] = 1.0
    # unit-length item columns, in doubles (all_pairs_knn takes nothing else)
    unit = sp.csr_matrix((m.data / norms[m.indices], m.indices, m.indptr), shape=m.shape)
    # all_pairs_knn counts the item itself among its K, so ask for one more and drop it
    sim = all_pairs_knn(unit, k + 1, show_progress=False, num_threads=num_threads)
    # the COO comes out grouped by row; building the CSR from it directly skips a 0.4 s
    # .tocsr() at scale 1.0 (a sort that would only be needed if the grouping ever changed)
    row, col, val = sim.row, sim.col, sim.data
    if np.any(row[1:] < row[:-1]):
        order = np.argsort(row, kind="stable")
        row, col, val = row[order], col[order], val[order]
    keep = (row != col) & (val > 0)
    # an item tied at cosine 1 with others may have lost its own slot: k + 1 others remain, and
    # the weakest of them (ties: the higher column) goes
    counts = np.bincount(row[keep], minlength=n_items)
    over = np.flatnonzero(keep & (counts[row] > k))
    if over.size:
        order = np.lexsort((-col[over], val[over], row[over]))
        first_of_row = np.r_[True, row[over][order][1:] != row[over][order][:-1]]
        keep[over[order][first_of_row]] = False
    indptr = np.r_[0, np.cumsum(np.bincount(row[keep], minlength=n_items))]
    out = sp.csr_matrix(
        (val[keep].astype(np.float32), col[keep], indptr), shape=(n_items, n_items)
    )
    out.sort_indices()
    return out


class ItemKNNRecommender(Recommender):
    """Score = user's weighted history × top-k item-item cosine matrix (sparse × sparse)."""

    name: ClassVar[str] = "item_knn"
    session_aware: ClassVar[bool] = True

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        # popularity_weight: on the synthetic default most of a user's *next* items are not
        # neighbours of their history (new sessions follow taste, not the last item), and a
        # history's weak, low-support neighbours then outrank popular items. Blending in half of
        # the normalised popularity took NDCG@10 from 0.0086 to 0.028 at scale 0.05 (Popularity
        # alone: 0.026); bm25 damps heavy users. Tuning searches both.
        return {
            "k": 50,
            "weighting": "bm25",
            "session_decay": 0.8,
            "popularity_weight": 0.5,
            "num_threads": 0,
        }

    @classmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "k": trial.suggest_int("k", 10, 200, log=True),
            "weighting": trial.suggest_categorical("weighting", list(WEIGHTINGS)),
            "session_decay": trial.suggest_float("session_decay", 0.3, 1.0),
            "popularity_weight": trial.suggest_float("popularity_weight", 1e-3, 3.0, log=True),
        }

    def _validate_params(self) -> None:
        p = self.params
        if not (isinstance(p["k"], int | np.integer) and p["k"] > 0):
            raise ValueError(f"k must be a positive integer, got {p['k']!r}")
        if p["weighting"] not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {p['weighting']!r}")
        if not p["popularity_weight"] >= 0:
            raise ValueError(f"popularity_weight must be >= 0, got {p['popularity_weight']!r}")
        if not 0 < p["session_decay"] <= 1:
            raise ValueError(f"session_decay must be in (0, 1], got {p['session_decay']!r}")

    def _fit(self, data: TrainingData) -> None:
        matrix = weight_interactions(data.user_item, self.params["weighting"])
        self.similarity = cosine_neighbours(
            matrix, int(self.params["k"]), int(self.params["num_threads"])
        )
        self._set_tiebreak()

    def _set_tiebreak(self) -> None:
        top = float(self._popularity.max()) if self._popularity.size else 0.0
        weight = max(float(self.params["popularity_weight"]), POPULARITY_TIEBREAK)
        scale = weight / top if top > 0 else 0.0
        self._tiebreak = (self._popularity * scale).astype(np.float32)
        # ranked on the float32 tie-break itself, so rounding ties order by column as required
        self._tiebreak_order = np.argsort(-self._tiebreak, kind="stable")

    def _scores_from(self, weights: sp.csr_matrix) -> np.ndarray:
        scores = (weights @ self.similarity).toarray()
        scores += self._tiebreak
        return scores

    def _score(self, user_rows: np.ndarray) -> np.ndarray:
        return self._scores_from(self._seen[user_rows])

    def _sparse_topk(
        self, weights: sp.csr_matrix, width: int, exclude: sp.csr_matrix | None
    ) -> tuple[np.ndarray, np.ndarray]:
        # a history reaches a few hundred items through its neighbours; every other item scores
        # only the popularity tie-break, so rank the reached ones plus a short popular list
        reached = (weights @ self.similarity).tocsr()
        rows = np.repeat(np.arange(reached.shape[0]), np.diff(reached.indptr))
        vals = reached.data.astype(np.float32) + self._tiebreak[reached.indices]
        return topk_candidates(
            reached.shape[0], rows, reached.indices, vals, self.n_items, width, exclude,
            prior=self._tiebreak, prior_order=self._tiebreak_order,
        )

    def _recommend_rows(
        self, user_rows: np.ndarray, width: int, exclude_seen: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        history = self._seen[user_rows]
        return self._sparse_topk(history, width, history if exclude_seen else None)

    def _session_topk(
        self, sessions: sp.csr_matrix, width: int, exclude: sp.csr_matrix | None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._sparse_topk(sessions, width, exclude)

    def _similar_rows(self, item_cols: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        neighbours = self.similarity[item_cols]
        rows = np.repeat(np.arange(item_cols.size), np.diff(neighbours.indptr))
        return topk_candidates(
            item_cols.size, rows, neighbours.indices, neighbours.data, self.n_items, width
        )

    def _score_sessions(self, sessions: sp.csr_matrix) -> np.ndarray:
        return self._scores_from(sessions)

    def _session_decay(self) -> float:
        return float(self.params["session_decay"])

    def _score_items(self, item_cols: np.ndarray) -> np.ndarray:
        # beyond the k stored neighbours nothing is similar: -inf leaves those slots empty
        scores = self.similarity[item_cols].toarray()
        scores[scores == 0] = -np.inf
        return scores

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return csr_to_arrays("similarity", self.similarity)

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.similarity = csr_from_arrays("similarity", arrays)
        self._set_tiebreak()
