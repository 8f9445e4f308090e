"""Item-based collaborative filtering: top-``k`` (asymmetric) cosine neighbours per item.

The neighbour matrix comes from ``implicit``'s multi-threaded ``all_pairs_knn``: on the
scale-1.0 synthetic matrix (1.4M users × 235k items, 2.2M nnz, 2 cores) it takes ~1 s against
~14 s for a blocked ``scipy.sparse`` X.T @ X with a vectorised per-row top-k, with the same
neighbour cosines for every item (``benchmarks/bench_models.py --compare-scipy-knn``).

Why the defaults (binary item vectors, asymmetry 1, normalised rows, popularity weight 0.03):
on the synthetic default a user's history is short (median 2 items) and 88–93 % of kept
neighbour pairs rest on a single shared user, so plain cosine ranks rare one-off co-occurrences
first; only 12.5 % of the next test items were reachable through the history's neighbours
(scale 0.05, train → valid), and NDCG@10 barely matched Popularity (0.0296 vs 0.0276; scale 1.0:
0.0023 vs 0.0024). Conditional-probability neighbours (Deshpande & Karypis 2004) point at the
items people who saw i went on to see, which are the taste-driven picks the generator plants:
reach 22 %, NDCG@10 0.059 at 0.05 and 0.0092 at 1.0 (2.1× and 3.8× Popularity), and next-item
Recall@20 rose as well (0.19 → 0.45 at 0.05). Recency-weighting the history, cosine shrinkage
and larger neighbourhoods (k 100–500) did not help there. ``asymmetry`` 0.5 with
``weighting`` "bm25", ``normalize`` false, ``binary_history`` false and ``popularity_weight``
0.5 is the old plain-cosine model.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys_assets.core.cpu import resolve_threads
from recsys_assets.core.data.training_data import TrainingData
from recsys_assets.core.models.base import Recommender
from recsys_assets.core.models.serialization import csr_from_arrays, csr_to_arrays
from recsys_assets.core.models.topk import topk_candidates
from recsys_assets.core.models.weighting import WEIGHTINGS, weight_interactions

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

# "binary": one per (user, item) seen, whatever the events' weights
ITEM_WEIGHTINGS = ("binary", *WEIGHTINGS)

# Items the neighbours do not reach score 0; at least this much of the normalised popularity
# orders them (and breaks exact ties) even with ``popularity_weight`` 0.
POPULARITY_TIEBREAK = 1e-6


def cosine_neighbours(
    user_item: sp.csr_matrix, k: int, num_threads: int = 0, asymmetry: float = 0.5
) -> sp.csr_matrix:
    """(n_items, n_items) CSR: row i holds the similarity of item i to its ``k`` nearest items.

    The similarity is Aiolli's asymmetric cosine ``x_i·x_j / (‖x_i‖^{2α} ‖x_j‖^{2(1-α)})`` of
    the item columns: ``asymmetry`` α = 0.5 is the plain cosine, 1.0 the conditional probability
    P(j | i) of Deshpande & Karypis (on a binary matrix). The item itself is left out; items with
    fewer than ``k`` co-occurring items keep fewer.
    """
    from implicit._nearest_neighbours import all_pairs_knn

    n_items = user_item.shape[1]
    m = user_item.tocsr()
    sq = np.bincount(m.indices, weights=np.square(m.data, dtype=np.float64), minlength=n_items)
    # Only items that some user has can have neighbours. all_pairs_knn allocates (k + 1) slots
    # for every column, used or not: at scale 1.0 the catalogue has 417k items of which 235k
    # have events (a 100k-user sample: far fewer), and k 200 took 4 GB. The columns are
    # renumbered over the items with events (in the same order, so ties break as before).
    active = np.flatnonzero(sq > 0)
    if active.size < n_items:
        position = np.zeros(n_items, dtype=m.indices.dtype)
        position[active] = np.arange(active.size, dtype=m.indices.dtype)
        packed = sp.csr_matrix(
            (m.data, position[m.indices], m.indptr), shape=(m.shape[0], active.size)
        )
        sim = cosine_neighbours(packed, k, num_threads, asymmetry).tocoo()
        out = sp.csr_matrix(
            (sim.data, (active[sim.row], active[sim.col])), shape=(n_items, n_items)
        )
        out.sort_indices()
        return out
    sq[sq == 0] = 1.0
    # all_pairs_knn ranks row i by x_i·x_j / (s_i s_j) with one column scale s for both sides.
    # For a fixed row only s_j matters, so s = ‖x‖^{2(1-α)} picks exactly the asymmetric-cosine
    # neighbours; each row is then rescaled by s_i / ‖x_i‖^{2α} to the asymmetric value.
    col_scale = sq ** (1.0 - asymmetry)
    row_scale = col_scale / sq**asymmetry
    # scaled item columns, in doubles (all_pairs_knn takes nothing else)
    unit = sp.csr_matrix((m.data / col_scale[m.indices], m.indices, m.indptr), shape=m.shape)
    # all_pairs_knn counts the item itself among its K, so ask for one more and drop it
    sim = all_pairs_knn(unit, k + 1, show_progress=False, num_threads=num_threads)
    # the COO comes out grouped by row; building the CSR from it directly skips a 0.4 s
    # .tocsr() at scale 1.0 (a sort that would only be needed if the grouping ever changed)
    row, col, val = sim.row, sim.col, sim.data
    if np.any(row[1:] < row[:-1]):
        order = np.argsort(row, kind="stable")
        row, col, val = row[order], col[order], val[order]
    keep = (row != col) & (val > 0)
    # the item may have lost its own slot (tied at the top, or outranked when asymmetry > 0.5):
    # k + 1 others remain, and the weakest of them (ties: the higher column) goes
    counts = np.bincount(row[keep], minlength=n_items)
    over = np.flatnonzero(keep & (counts[row] > k))
    if over.size:
        order = np.lexsort((-col[over], val[over], row[over]))
        first_of_row = np.r_[True, row[over][order][1:] != row[over][order][:-1]]
        keep[over[order][first_of_row]] = False
    indptr = np.r_[0, np.cumsum(np.bincount(row[keep], minlength=n_items))]
    values = val[keep] if asymmetry == 0.5 else val[keep] * row_scale[row[keep]]
    out = sp.csr_matrix((values.astype(np.float32), col[keep], indptr), shape=(n_items, n_items))
    out.sort_indices()
    return out


def normalize_neighbour_rows(sim: sp.csr_matrix) -> sp.csr_matrix:
    """Each item's neighbour similarities scaled to sum to 1 (empty rows stay empty)."""
    counts = np.diff(sim.indptr)
    row = np.repeat(np.arange(sim.shape[0]), counts)
    sums = np.bincount(row, weights=sim.data, minlength=sim.shape[0])
    data = (sim.data / sums[row]).astype(np.float32)
    return sp.csr_matrix((data, sim.indices, sim.indptr), shape=sim.shape)


def item_vectors(user_item: sp.csr_matrix, weighting: str) -> sp.csr_matrix:
    """The user×item matrix the similarities are computed on."""
    if weighting == "binary":
        m = user_item.tocsr().astype(np.float32)
        m.data = (m.data > 0).astype(np.float32)
        m.eliminate_zeros()
        return m
    return weight_interactions(user_item, weighting)


class ItemKNNRecommender(Recommender):
    """Score = user's history × top-k item-item similarity matrix (sparse × sparse), plus a
    ``popularity_weight`` share of the normalised popularity."""

    name: ClassVar[str] = "item_knn"
    session_aware: ClassVar[bool] = True

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        # Defaults chosen on the synthetic default (train -> valid, scale 0.05 and 1.0; see the
        # module docstring). A user's next items there are fresh, taste-driven picks: popular
        # items of the roots they like, rarely a neighbour of an item they saw. Plain cosine
        # fills neighbour lists with rare items that co-occurred with the item once, so
        # ``asymmetry`` 1 (conditional probability P(j | i)) ranks the neighbours people actually
        # go on to, ``binary`` stops heavy viewers of one item deciding its neighbours, and
        # ``normalize`` gives each history item the same total vote, so one item with many
        # strong co-occurrences does not drown the others. NDCG@10 is flat for a
        # popularity_weight of 0.03–0.1; the low end keeps popular items from swamping the
        # session mode, whose one-item sessions spread a weight of 1 over up to k neighbours
        # (next-item Recall@20 at scale 1.0, valid: 0.25 at 0.1, 0.38 at 0.03).
        return {
            "k": 50,
            "weighting": "binary",
            "asymmetry": 1.0,
            "normalize": True,
            "binary_history": True,
            "session_decay": 0.8,
            "popularity_weight": 0.03,
            "num_threads": 0,
        }

    @classmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "k": trial.suggest_int("k", 10, 200, log=True),
            "weighting": trial.suggest_categorical("weighting", list(ITEM_WEIGHTINGS)),
            "asymmetry": trial.suggest_float("asymmetry", 0.5, 1.0),
            "normalize": trial.suggest_categorical("normalize", [True, False]),
            "binary_history": trial.suggest_categorical("binary_history", [True, False]),
            "session_decay": trial.suggest_float("session_decay", 0.3, 1.0),
            "popularity_weight": trial.suggest_float("popularity_weight", 1e-3, 3.0, log=True),
        }

    def _validate_params(self) -> None:
        p = self.params
        if not (isinstance(p["k"], int | np.integer) and p["k"] > 0):
            raise ValueError(f"k must be a positive integer, got {p['k']!r}")
        if p["weighting"] not in ITEM_WEIGHTINGS:
            raise ValueError(f"weighting must be one of {ITEM_WEIGHTINGS}, got {p['weighting']!r}")
        if not 0 <= p["asymmetry"] <= 1:
            raise ValueError(f"asymmetry must be in [0, 1], got {p['asymmetry']!r}")
        for flag in ("normalize", "binary_history"):
            if not isinstance(p[flag], bool | np.bool_):
                raise ValueError(f"{flag} must be true or false, got {p[flag]!r}")
        if not p["popularity_weight"] >= 0:
            raise ValueError(f"popularity_weight must be >= 0, got {p['popularity_weight']!r}")
        if not 0 < p["session_decay"] <= 1:
            raise ValueError(f"session_decay must be in (0, 1], got {p['session_decay']!r}")

    def _fit(self, data: TrainingData) -> None:
        start = time.perf_counter()
        matrix = item_vectors(data.user_item, self.params["weighting"])
        sim = cosine_neighbours(
            matrix,
            int(self.params["k"]),
            resolve_threads(int(self.params["num_threads"])),
            float(self.params["asymmetry"]),
        )
        log.info(
            "item_knn: %d neighbour pairs for %d items in %.2fs",
            sim.nnz,
            sim.shape[0],
            time.perf_counter() - start,
        )
        self.similarity = normalize_neighbour_rows(sim) if self.params["normalize"] else sim
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

    def _history(self, user_rows: np.ndarray) -> sp.csr_matrix:
        # with binary_history every seen item casts one vote, however often it was viewed or
        # bought: taste shows in *which* items a user touched more than in how often
        history = self._seen[user_rows]
        if self.params["binary_history"]:
            history.data = np.ones_like(history.data)
        return history

    def _score(self, user_rows: np.ndarray) -> np.ndarray:
        return self._scores_from(self._history(user_rows))

    def _sparse_topk(
        self, weights: sp.csr_matrix, width: int, exclude: sp.csr_matrix | None
    ) -> tuple[np.ndarray, np.ndarray]:
        # a history reaches a few hundred items through its neighbours; every other item scores
        # only the popularity tie-break, so rank the reached ones plus a short popular list
        reached = (weights @ self.similarity).tocsr()
        rows = np.repeat(np.arange(reached.shape[0]), np.diff(reached.indptr))
        vals = reached.data.astype(np.float32) + self._tiebreak[reached.indices]
        return topk_candidates(
            reached.shape[0],
            rows,
            reached.indices,
            vals,
            self.n_items,
            width,
            exclude,
            prior=self._tiebreak,
            prior_order=self._tiebreak_order,
        )

    def _recommend_rows(
        self, user_rows: np.ndarray, width: int, exclude_seen: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        history = self._history(user_rows)
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
