"""Content-based: the user's (time-decayed) category profile against each item's category path.

Every item of a category has the same category vector, so a user's cosine to an item is the
cosine to its category: scores are computed per category (n_categories ≪ n_items) and only the
few items that can reach the top are expanded (see ``_category_topk``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys_assets.core.data.training_data import MS_PER_DAY, TrainingData
from recsys_assets.core.models.base import Recommender, normalize_rows
from recsys_assets.core.models.serialization import csr_from_arrays, csr_to_arrays
from recsys_assets.core.models.topk import topk_candidates

if TYPE_CHECKING:
    import optuna


def category_vectors(data: TrainingData, ancestor_weight: float) -> sp.csr_matrix:
    """(n_categories, n_categories), unit rows: 1 − w on the category, w on it and its ancestors.

    Sibling leaves share their parent's weight, so a taste for one leaf spreads to its
    neighbours in the tree, less strongly than to the leaf itself. Categories no item uses stay
    zero (nothing is ever scored through them).
    """
    n_cat = data.item_ancestors.shape[1]
    used, first_item = np.unique(data.item_category, return_index=True)
    first_item, used = first_item[used >= 0], used[used >= 0]
    # a category's ancestor row is that of any of its items
    pick = sp.csr_matrix(
        (np.ones(used.size, np.float32), (used, first_item)), shape=(n_cat, data.n_items)
    )
    ancestors = pick @ data.item_ancestors.astype(np.float32)
    own = sp.csr_matrix((np.ones(used.size, np.float32), (used, used)), shape=(n_cat, n_cat))
    vectors = sp.csr_matrix(own * (1.0 - ancestor_weight) + ancestors * ancestor_weight)
    vectors.eliminate_zeros()
    return normalize_rows(vectors).astype(np.float32)


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

    # --- fitting ------------------------------------------------------------------------------

    def _fit(self, data: TrainingData) -> None:
        p = self.params
        weight = data.event_weight.astype(np.float64)
        if p["half_life_days"] is not None:
            age_days = (data.reference_ms - data.event_time) / MS_PER_DAY
            weight = weight * np.exp2(-age_days / p["half_life_days"])
        category = data.item_category[data.event_item]
        known = category >= 0
        n_cat = data.item_ancestors.shape[1]
        per_category = sp.csr_matrix(
            (weight[known].astype(np.float32), (data.event_user[known], category[known])),
            shape=(data.n_users, n_cat),
        )
        self.cat_vectors = category_vectors(data, float(p["ancestor_weight"]))
        self.profiles = normalize_rows(per_category @ self.cat_vectors).astype(np.float32)
        self.item_category = data.item_category.astype(np.int32)
        self.item_bonus = self._within_category_popularity(self.item_category)
        self._prepare()

    def _within_category_popularity(self, item_category: np.ndarray) -> np.ndarray:
        """``popularity_weight`` × item popularity / the top popularity in its category."""
        group = item_category.astype(np.int64) + 1  # unknown category (-1) is its own group
        top = np.zeros(group.max() + 1, dtype=np.float64)
        np.maximum.at(top, group, self._popularity)
        share = np.divide(
            self._popularity, top[group], out=np.zeros(group.size), where=top[group] > 0
        )
        return (self.params["popularity_weight"] * share).astype(np.float32)

    def _prepare(self) -> None:
        """Derived serving arrays: each category's items by bonus, and the bonus ranking."""
        n_cat = self.cat_vectors.shape[0]
        cat = self.item_category
        cols = np.arange(cat.size)
        order = np.lexsort((cols, -self.item_bonus, cat))
        order = order[cat[order] >= 0]
        self._cat_items = order
        self._cat_size = np.bincount(cat[cat >= 0], minlength=n_cat)
        self._cat_start = np.r_[0, np.cumsum(self._cat_size)]
        self._cat_max_bonus = np.zeros(n_cat, dtype=np.float32)
        np.maximum.at(self._cat_max_bonus, cat[cat >= 0], self.item_bonus[cat >= 0])
        self._bonus_order = np.argsort(-self.item_bonus, kind="stable")
        self._cat_vectors_t = self.cat_vectors.T.tocsr()

    # --- scoring ------------------------------------------------------------------------------

    def _category_scores(self, vectors: sp.csr_matrix) -> np.ndarray:
        """Cosine of each row vector (profile or category vector) to every category."""
        return (vectors @ self._cat_vectors_t).toarray().astype(np.float32)

    def _expand(self, cat_scores: np.ndarray) -> np.ndarray:
        with_unknown = np.concatenate(
            [cat_scores, np.zeros((cat_scores.shape[0], 1), np.float32)], axis=1
        )
        scores = with_unknown[:, self.item_category]  # -1 picks the appended zero column
        scores += self.item_bonus
        return scores

    def _score(self, user_rows: np.ndarray) -> np.ndarray:
        return self._expand(self._category_scores(self.profiles[user_rows]))

    def _score_items(self, item_cols: np.ndarray) -> np.ndarray:
        return self._expand(self._category_scores(self._item_vectors(item_cols)))

    def _item_vectors(self, item_cols: np.ndarray) -> sp.csr_matrix:
        cat = self.item_category[item_cols]
        vectors = self.cat_vectors[np.maximum(cat, 0)].tocsr()
        return sp.diags((cat >= 0).astype(np.float32)) @ vectors

    def _recommend_rows(
        self, user_rows: np.ndarray, width: int, exclude_seen: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        exclude = self._seen[user_rows] if exclude_seen else None
        return self._category_topk(self._category_scores(self.profiles[user_rows]), width, exclude)

    def _similar_rows(self, item_cols: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        itself = sp.csr_matrix(
            (np.ones(item_cols.size, np.float32), (np.arange(item_cols.size), item_cols)),
            shape=(item_cols.size, self.n_items),
        )
        scores = self._category_scores(self._item_vectors(item_cols))
        return self._category_topk(scores, width, itself)

    def _category_topk(
        self, cat_scores: np.ndarray, width: int, exclude: sp.csr_matrix | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of ``cat_score[row, category(item)] + bonus[item]`` without the dense block.

        Walking categories by score, the first ones that hold ``width + n_excluded`` items set
        a floor s*: a category whose score + best bonus is below s* cannot place an item. In a
        kept category only its first ``width + n_excluded`` items by bonus can. Items outside
        every positive category score their bonus alone: ``topk_candidates``' prior.
        """
        n, n_cat = cat_scores.shape
        n_excl = np.zeros(n, np.int64) if exclude is None else np.diff(exclude.indptr)
        need = width + n_excl
        by_score = np.argsort(-cat_scores, axis=1, kind="stable")
        filled = np.cumsum(self._cat_size[by_score], axis=1)
        reach = np.minimum((filled < need[:, None]).sum(axis=1), n_cat - 1)
        at = np.arange(n)
        floor = np.where(filled[:, -1] >= need, cat_scores[at, by_score[at, reach]], -np.inf)
        keep = (cat_scores > 0) & (self._cat_size > 0)
        keep &= cat_scores + self._cat_max_bonus >= floor[:, None]
        r, c = np.nonzero(keep)
        take = np.minimum(need[r], self._cat_size[c])
        rows = np.repeat(r, take)
        offset = np.arange(rows.size) - np.repeat(np.cumsum(take) - take, take)
        cols = self._cat_items[np.repeat(self._cat_start[c], take) + offset]
        vals = np.repeat(cat_scores[r, c], take) + self.item_bonus[cols]
        return topk_candidates(
            n,
            rows,
            cols,
            vals,
            self.n_items,
            width,
            exclude,
            prior=self.item_bonus,
            prior_order=self._bonus_order,
        )

    # --- serialisation ----------------------------------------------------------------------

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {
            **csr_to_arrays("cat_vectors", self.cat_vectors),
            **csr_to_arrays("profiles", self.profiles),
            "item_category": self.item_category,
            "item_bonus": self.item_bonus,
        }

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.cat_vectors = csr_from_arrays("cat_vectors", arrays)
        self.profiles = csr_from_arrays("profiles", arrays)
        self.item_category = arrays["item_category"]
        self.item_bonus = arrays["item_bonus"]
        self._prepare()
