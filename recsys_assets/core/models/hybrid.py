"""Hybrid: candidates from several recommenders, re-ranked by gradient-boosted trees.

Candidates per user come from every source model (by registry name; by default every model
registered besides this one, so models added to the registry join without a code change),
from the popular items of the user's favourite categories and from the recently trending items.
Each candidate carries every source's score, rank and gap to that source's best score, plus
user features (RFM-like recency/frequency/monetary and their score, activity, sessions, price
level), item features (popularity over several windows, trend, decayed "hot" score, age,
buy share, price, price bucket, availability) and user×item features (category and root
affinity, days since the user's last event in the category, same category as the last event,
price gap). A ``HistGradientBoostingClassifier`` learns P(user touches item) from them.

Two phases inside one ``fit`` (see ``hybrid_history``): the last ``label_fraction`` of the
training events is the label period. Sources fitted on the events before it propose
candidates for the label period's users; what those users touched labels the candidates; the
re-ranker learns on that. Then the sources are refitted on all the events, and serving
combines their candidates with the learned ranker. When the model asset fits on train+valid,
the label period is the validation split: the re-ranker learns from models fitted on train
only, and the test split is never an input.

Stored without pickle: each source's own bytes, the trees as numpy arrays (walked by
``hybrid_trees``), the feature tables as arrays.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys_assets.core.data.training_data import TrainingData, lookup_index
from recsys_assets.core.models.base import Recommender
from recsys_assets.core.models.hybrid_candidates import (
    Candidates,
    SourceList,
    category_popular,
    from_matrix,
    global_list,
    merge_sources,
)
from recsys_assets.core.models.hybrid_features import (
    ITEM_FEATURES,
    PAIR_FEATURES,
    USER_FEATURES,
    FeatureContext,
    build_context,
    candidate_features,
    choose_half_life,
    feature_names,
)
from recsys_assets.core.models.hybrid_history import (
    given_cutoff,
    history_before,
    label_cutoff,
    label_matrix,
    users_subset,
)
from recsys_assets.core.models.hybrid_trees import TreeEnsemble, ensemble_from_sklearn
from recsys_assets.core.models.topk import topk_candidates

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

OWN_SOURCES = ("category_popular", "trending")
# The re-ranker's feature groups, in the column order of ``feature_names``: "source" is every
# source's score, rank and gap. ``drop_feature_groups`` hides groups from the ranker (ablation).
FEATURE_GROUPS = ("item", "user", "pair", "source")
# Users per candidate batch while building the re-ranker's training set.
_TRAIN_BATCH = 2048

# How a stored Hybrid's referenced sources are loaded: (name, version) -> fitted model. Set by
# the model store's loader (``resolving_sources``); None elsewhere.
_source_resolver: ContextVar[Callable[[str, int], Recommender] | None] = ContextVar(
    "hybrid_source_resolver", default=None
)


@contextmanager
def resolving_sources(resolve: Callable[[str, int], Recommender]) -> Iterator[None]:
    """Inside, a Hybrid loaded from bytes gets its referenced sources from ``resolve``."""
    token = _source_resolver.set(resolve)
    try:
        yield
    finally:
        _source_resolver.reset(token)


# Sources fitted inside HybridRecommender.tuning_context(), by (name, parameters, data
# fingerprint); None outside it, so nothing outlives a tuning study.
_shared_sources: dict[tuple[str, str, str], Recommender] | None = None


class HybridRecommender(Recommender):
    """Multi-source candidates + features, re-ranked by boosted trees (module docstring)."""

    name: ClassVar[str] = "hybrid"
    # A fit trains every source twice; inside tuning_context the trials after the first reuse
    # those fits (the search space never changes a source), so a trial then costs candidates,
    # features and the re-ranker only. The budget covers the first trial's source fits.
    tuning_trials: ClassVar[int] = 6
    tuning_timeout_seconds: ClassVar[float] = 240.0
    # Its scoring is numba kernels and numpy on one thread each (candidates, features, the
    # tree walk, the top-k), and it runs alone at the end of the main job with every core:
    # two batches at once scored 16k test users at scale 1.0 in 7.4-7.5 s instead of 12.1 s.
    batches_in_threads: ClassVar[bool] = True

    @classmethod
    @contextmanager
    def tuning_context(cls) -> Iterator[None]:
        """Fits inside share their fitted sources: a source fitted on the same data with the
        same parameters is fitted once (both phases of every trial of a study)."""
        global _shared_sources
        outer = _shared_sources
        if outer is None:
            _shared_sources = {}
        try:
            yield
        finally:
            if outer is None:
                _shared_sources = None

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {
            # None: every registered model except this one, resolved (and recorded) at fit time
            "sources": None,
            # per-source parameter overrides (applied to the sources in use). ALS runs twice per
            # fit and dominates its time at scale 1.0 (44 s per fit); 6 iterations instead of 15
            # left the Hybrid's NDCG@10 unchanged on the default (0.0904 vs 0.0892, scale 0.05)
            # GRU4Rec: 3 epochs gave 98% of its 5-epoch next-item MRR on the default
            "source_params": {"als": {"iterations": 6}, "gru4rec": {"n_epochs": 3}},
            "candidates_per_source": 30,
            "category_candidates": 20,
            "categories_per_user": 3,
            "trending_candidates": 20,
            # None: chosen on the label period from HALF_LIFE_GRID_DAYS (see choose_half_life)
            "hot_half_life_days": None,
            "label_fraction": 0.125,
            "max_label_users": 10_000,
            # The history phase fits every source on the history of at most this many users:
            # the label users (all of their history) plus a seeded sample of the others. At
            # scale 1.0 (~1M users with history) the full-size fits cost as much as the
            # sources' own trained_model assets again; the default data (~60k) is not sampled.
            # None: every user.
            "history_max_users": 100_000,
            # Small, strongly regularised trees: a few hundred positives (scale 0.01-0.05) are
            # all the label period gives, and deeper trees fitted their noise. On the default
            # (scale 0.02 / 0.05) and on trend-dominated data (two seeds), depth 3 with 200
            # rows per leaf scored best of the settings tried (NDCG@10 1.44-1.49x ItemKNN and
            # 1.07-1.20x the best windowed popularity, against 1.40x and 0.81-0.86x for depth
            # 6 / 24 leaves / 40 rows); shallow trees also make scoring cheap.
            "learning_rate": 0.1,
            "max_iter": 60,
            "max_depth": 3,
            "max_leaf_nodes": 8,
            "min_samples_leaf": 200,
            "l2_regularization": 10.0,
            # OpenMP threads of the tree fit (0 = all cores). One by default: on the shared
            # 2-core machine two threads spin at every barrier and the fit of 66k rows took
            # 0.3-6 s, one thread a steady 0.56 s
            "ranker_threads": 1,
            "similar_source": "item_knn",
            "random_state": 42,
            # feature groups (FEATURE_GROUPS) the re-ranker never sees: their columns are a
            # constant 0, so no tree can split on them (the ablation report's knob)
            "drop_feature_groups": [],
        }

    @classmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "candidates_per_source": trial.suggest_int("candidates_per_source", 10, 60, log=True),
            "category_candidates": trial.suggest_int("category_candidates", 5, 50, log=True),
            "trending_candidates": trial.suggest_int("trending_candidates", 5, 50, log=True),
            "hot_half_life_days": trial.suggest_categorical(
                "hot_half_life_days", [None, 0.5, 2.0, 8.0, 32.0]
            ),
            "learning_rate": trial.suggest_float("learning_rate", 0.03, 0.3, log=True),
            "max_iter": trial.suggest_int("max_iter", 20, 150, log=True),
            "max_depth": trial.suggest_int("max_depth", 2, 6),
            "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 4, 32, log=True),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 20, 800, log=True),
            "l2_regularization": trial.suggest_float("l2_regularization", 1e-3, 10.0, log=True),
        }

    def _validate_params(self) -> None:
        p = self.params
        for key in (
            "candidates_per_source",
            "category_candidates",
            "categories_per_user",
            "trending_candidates",
            "max_label_users",
            "max_iter",
            "max_depth",
            "max_leaf_nodes",
            "min_samples_leaf",
            "ranker_threads",
        ):
            if not (isinstance(p[key], int | np.integer) and p[key] >= 0):
                raise ValueError(f"{key} must be a non-negative integer, got {p[key]!r}")
        for key in ("max_iter", "max_depth", "max_label_users", "min_samples_leaf"):
            if p[key] < 1:
                raise ValueError(f"{key} must be >= 1, got {p[key]!r}")
        if p["max_leaf_nodes"] < 2:
            raise ValueError(f"max_leaf_nodes must be >= 2, got {p['max_leaf_nodes']!r}")
        if p["max_depth"] > 12:
            raise ValueError(
                f"max_depth must be <= 12 (trees are padded to 2**depth), got {p['max_depth']}"
            )
        hmu = p["history_max_users"]
        if hmu is not None and not (isinstance(hmu, int | np.integer) and hmu >= 1):
            raise ValueError(f"history_max_users must be an integer >= 1 or None, got {hmu!r}")
        if not 0 < p["label_fraction"] < 1:
            raise ValueError(f"label_fraction must be in (0, 1), got {p['label_fraction']!r}")
        if not p["learning_rate"] > 0:
            raise ValueError(f"learning_rate must be > 0, got {p['learning_rate']!r}")
        if p["hot_half_life_days"] is not None and not p["hot_half_life_days"] > 0:
            raise ValueError(
                f"hot_half_life_days must be > 0 or None, got {p['hot_half_life_days']!r}"
            )
        if not p["l2_regularization"] >= 0:
            raise ValueError(f"l2_regularization must be >= 0, got {p['l2_regularization']!r}")
        if p["sources"] is not None:
            if isinstance(p["sources"], str) or not all(isinstance(s, str) for s in p["sources"]):
                raise ValueError(
                    f"sources must be a list of model names or None, got {p['sources']!r}"
                )
            if self.name in p["sources"]:
                raise ValueError("sources: the hybrid cannot be its own source")
        dropped = p["drop_feature_groups"]
        if isinstance(dropped, str) or not all(g in FEATURE_GROUPS for g in dropped):
            raise ValueError(
                f"drop_feature_groups must be a list of {list(FEATURE_GROUPS)}, got {dropped!r}"
            )
        if not isinstance(p["source_params"], dict):
            raise ValueError(
                f"source_params must be a mapping name -> params, got {p['source_params']!r}"
            )

    # --- fitting ------------------------------------------------------------------------------

    def fit_with_sources(
        self,
        data: TrainingData,
        fitted: dict[str, Recommender],
        history_fitted: dict[str, Recommender] | None = None,
        history_end_ms: int | None = None,
    ) -> HybridRecommender:
        """``fit``, reusing already fitted source models for the final phase.

        A model in ``fitted`` that was fitted on ``data`` (the same users and items; the caller
        vouches for the rest, e.g. by the training-data version the model store records) is
        used as the final source instead of a refit, and its parameters are the ones the
        history phase fits with, so the re-ranker learns from the same kind of source it is
        served with. The graph's ``trained_model[hybrid]`` passes the other partitions' stored
        models: one round of source fits instead of two.

        ``history_fitted`` with ``history_end_ms``: models fitted on ``data``'s events up to
        ``history_end_ms`` (the graph passes the tuning studies' chosen fits, made on the train
        split of a user sample that holds every user with a validation target, and the end of
        the train split). The label period then starts right after ``history_end_ms`` instead
        of at ``label_fraction``, and each of these models that has the same parameters as its
        final source is the history phase's source as it is: no history-phase fit at all. They
        may know other users and items than ``data`` (they are asked by id, as any source is).
        """
        if (history_fitted is None) != (history_end_ms is None):
            raise ValueError("history_fitted and history_end_ms go together")
        self._given_sources = dict(fitted)
        self._given_history = dict(history_fitted or {})
        self._history_end_ms = history_end_ms
        try:
            self.fit(data)
        finally:
            self._given_sources, self._given_history, self._history_end_ms = {}, {}, None
        return self

    def first_trial_too_slow(self, sources: dict[str, Recommender], timeout: float) -> str | None:
        """Why a tuning study of this model with ``sources`` as its final sources could run only
        its first trial, or None. That trial fits every source again for its history phase, on
        ``1 - label_fraction`` of the same data, so the sources' own recorded fit seconds
        (a lower bound: other sources are fitted from scratch) say what it costs before it runs.
        At scale 1.0 that was 160 s against a 60 s budget: a study of the defaults alone, which
        chose nothing."""
        fits = {n: m.fit_seconds for n, m in sources.items()}
        if not fits or any(f is None for f in fits.values()):
            return None
        share = 1.0 - float(self.params["label_fraction"])
        estimate = share * sum(fits.values())
        if estimate <= timeout:
            return None
        return (
            f"the first trial alone refits its sources on {share:.0%} of the tuning sample, "
            f"~{estimate:.0f} s by their own fits ("
            + ", ".join(f"{n} {s:.0f} s" for n, s in sorted(fits.items()))
            + f"), past the {timeout:.0f} s budget: no second trial could run"
        )

    def _reusable_history(self, name: str) -> Recommender | None:
        """The given history-phase model of ``name`` when it has its final source's params."""
        given = getattr(self, "_given_history", {}).get(name)
        if given is None or not given.is_fitted:
            return None
        if _params_key(dict(given.params)) != _params_key(self._source_params(name)):
            log.info("hybrid: the given history-phase %s has other parameters; refitting", name)
            return None
        return given

    def _source_params(self, name: str) -> dict[str, Any] | None:
        given = getattr(self, "_given_sources", {}).get(name)
        if given is not None:
            return dict(given.params)
        return self.params["source_params"].get(name)

    def _reusable(self, name: str, data: TrainingData) -> Recommender | None:
        given = getattr(self, "_given_sources", {}).get(name)
        if given is None or not given.is_fitted:
            return None
        if not (
            np.array_equal(given.user_ids, data.user_ids)
            and np.array_equal(given.item_ids, data.item_ids)
        ):
            log.warning("hybrid: the given %s was fitted on other users/items; refitting", name)
            return None
        return given

    def _source_names(self) -> list[str]:
        from recsys_assets.core.models.registry import MODEL_REGISTRY

        names = self.params["sources"]
        if names is None:
            names = [n for n in MODEL_REGISTRY if n != self.name]
        unknown = sorted(set(names) - set(MODEL_REGISTRY))
        if unknown:
            valid = sorted(set(MODEL_REGISTRY) - {self.name})
            raise ValueError(f"sources: unknown model(s) {unknown}; valid models: {valid}")
        extra = sorted(set(self.params["source_params"]) - set(MODEL_REGISTRY))
        if extra:
            raise ValueError(f"source_params: unknown model(s) {extra}")
        return list(names)

    def _fit_sources(
        self, names: list[str], data: TrainingData, phase: str
    ) -> dict[str, Recommender]:
        from recsys_assets.core.models.registry import create_model

        shared = _shared_sources
        digest = data_fingerprint(data) if shared is not None else ""
        models = {}
        for name in names:
            start = time.perf_counter()
            params = self._source_params(name)
            key = (name, _params_key(params), digest)
            model = shared.get(key) if shared is not None else None
            if phase == "final" and (given := self._reusable(name, data)) is not None:
                model = given
                self.reused_sources.append(name)
                log.info("hybrid: final source %s is the given fitted model (no refit)", name)
            elif model is None:
                try:
                    model = create_model(name, params).fit(data)
                except ValueError as exc:
                    # A model registered later may not apply to every data set (GRU4Rec needs
                    # sessions of two items or more). With the automatic source list it is
                    # left out and reported; a source the caller named must fit.
                    if self.params["sources"] is not None or phase != "history":
                        raise
                    log.warning("hybrid: source %s left out: %s", name, exc)
                    self.dropped_sources[name] = str(exc)
                    continue
                if shared is not None:
                    shared[key] = model
            else:
                log.info(
                    "hybrid: %s source %s reused from an earlier fit on the same data", phase, name
                )
            models[name] = model
            self.timings[f"{phase}_fit_{name}"] = time.perf_counter() - start
        return models

    def _fit(self, data: TrainingData) -> None:
        p = self.params
        self.timings: dict[str, float] = {}
        self.score_timings: dict[str, float] = {}
        names = self._source_names()
        self.dropped_sources: dict[str, str] = {}
        self.reused_sources: list[str] = []

        clock = time.perf_counter()
        history_end = getattr(self, "_history_end_ms", None)
        if history_end is None:
            cutoff = label_cutoff(data, float(p["label_fraction"]))
        else:
            cutoff = given_cutoff(data, int(history_end))
        history = history_before(data, cutoff)
        labels = label_matrix(data, history, cutoff)
        self.timings["history_cut"] = time.perf_counter() - clock
        log.info(
            "hybrid: label period after %d (%d of %d events); %d label users; sources %s",
            cutoff,
            int((data.event_time > cutoff).sum()),
            data.event_time.size,
            int((np.diff(labels.indptr) > 0).sum()),
            names,
        )

        label_users = self._label_users(labels)
        given = {n: m for n in names if (m := self._reusable_history(n)) is not None}
        self.reused_history_sources = list(given)
        if given:
            log.info("hybrid: history-phase sources %s are the given fits (no refit)", list(given))
        history_users = {"history_users": int((np.diff(history.user_item.indptr) > 0).sum())}
        fitted: dict[str, Recommender] = {}
        if len(given) < len(names):
            clock = time.perf_counter()
            source_history = self._source_history(history, label_users)
            self.timings["history_sample"] = time.perf_counter() - clock
            history_users["history_fit_users"] = int(
                (np.diff(source_history.user_item.indptr) > 0).sum()
            )
            fitted = self._fit_sources(
                [n for n in names if n not in given], source_history, "history"
            )
            del source_history
        models = {n: given.get(n, fitted.get(n)) for n in names if n in given or n in fitted}
        if not models:
            raise ValueError(f"hybrid: none of the sources {names} could be fitted")
        names = list(models)
        self.source_names = names
        self.params["sources"] = list(names)  # record what "every registered model" meant
        clock = time.perf_counter()
        self.half_life_days = p["hot_half_life_days"]
        if self.half_life_days is None:
            label_items = np.bincount(labels.indices, minlength=data.n_items)
            self.half_life_days = choose_half_life(
                history, label_items, int(p["trending_candidates"])
            )
        ctx = self._context(history)
        self.timings["history_context"] = time.perf_counter() - clock
        X, y, info = self._training_set(models, ctx, history, labels, label_users)
        clock = time.perf_counter()
        self.ensemble = self._fit_ranker(X, y)
        self.timings["ranker_fit"] = time.perf_counter() - clock
        del X, y, models, ctx, history

        self.models = self._fit_sources(names, data, "final")
        clock = time.perf_counter()
        self.context = self._context(data)
        self.timings["final_context"] = time.perf_counter() - clock
        self._prepare()
        self.info = {
            **info,
            "label_cutoff_ms": int(cutoff),
            "sources": names,
            "dropped_sources": self.dropped_sources,
            "reused_sources": self.reused_sources,
            "reused_history_sources": self.reused_history_sources,
            **history_users,
            "source_params": {n: self._source_params(n) for n in names},
            "hot_half_life_days": self.half_life_days,
        }
        log.info("hybrid: fitted; %s", {k: round(v, 2) for k, v in self.timings.items()})

    def _label_users(self, labels: sp.csr_matrix) -> np.ndarray:
        """Rows the re-ranker learns from: users with a label, at most ``max_label_users``."""
        p = self.params
        users = np.flatnonzero(np.diff(labels.indptr) > 0)
        if users.size > p["max_label_users"]:
            rng = np.random.default_rng(p["random_state"])
            users = np.sort(rng.choice(users, int(p["max_label_users"]), replace=False))
        return users

    def _source_history(self, history: TrainingData, label_users: np.ndarray) -> TrainingData:
        """What the history phase fits its sources on: all of ``history`` up to
        ``history_max_users`` users with events, else the label users plus a seeded sample."""
        cap = self.params["history_max_users"]
        active = np.flatnonzero(np.diff(history.user_item.indptr) > 0)
        if cap is None or active.size <= cap:
            return history
        others = np.setdiff1d(active, label_users, assume_unique=True)
        n_more = max(int(cap) - label_users.size, 0)
        rng = np.random.default_rng(self.params["random_state"])
        drawn = rng.choice(others, min(n_more, others.size), replace=False)
        rows = np.union1d(label_users, drawn)
        log.info(
            "hybrid: history-phase sources fit on %d of %d users with history (%d label users)",
            rows.size,
            active.size,
            label_users.size,
        )
        return users_subset(history, rows)

    def _context(self, data: TrainingData) -> FeatureContext:
        p = self.params
        return build_context(
            data,
            hot_half_life_days=float(self.half_life_days),
            cat_items_per_category=int(p["category_candidates"]),
            hot_list_size=int(p["trending_candidates"]) + 1000,
        )

    def _training_set(
        self,
        models: dict[str, Recommender],
        ctx: FeatureContext,
        history: TrainingData,
        labels: sp.csr_matrix,
        users: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Features and 0/1 outcomes of the label users' candidates (users with a hit only)."""
        seen = history.user_item.tocsr()
        label_keys = _csr_keys(labels)
        n_items = history.n_items
        parts_x, parts_y = [], []
        n_candidates = n_targets = n_hits = 0
        clock = time.perf_counter()
        t_feat = 0.0
        for start in range(0, users.size, _TRAIN_BATCH):
            rows = users[start : start + _TRAIN_BATCH]
            cand = self._candidates(models, ctx, seen, rows, exclude_seen=True)
            hit = np.isin(rows[cand.rows] * n_items + cand.cols, label_keys, kind="sort")
            n_candidates += cand.size
            n_targets += int(np.diff(labels.indptr)[rows].sum())
            n_hits += int(hit.sum())
            # users none of whose targets is among the candidates teach the ranker nothing
            useful = np.zeros(rows.size, dtype=bool)
            useful[cand.rows[hit]] = True
            keep = useful[cand.rows]
            t0 = time.perf_counter()
            parts_x.append(self._features(ctx, rows, cand.take(keep)))
            t_feat += time.perf_counter() - t0
            parts_y.append(hit[keep])
        self.timings["history_candidates"] = time.perf_counter() - clock - t_feat
        self.timings["history_features"] = t_feat
        X = (
            np.concatenate(parts_x)
            if parts_x
            else np.empty((0, len(self._feature_names())), np.float32)
        )
        y = np.concatenate(parts_y) if parts_y else np.empty(0, bool)
        info = {
            "label_users": int(users.size),
            "candidates_per_user": n_candidates / max(users.size, 1),
            "candidate_recall": n_hits / max(n_targets, 1),
            "train_rows": int(y.size),
            "train_positives": int(y.sum()),
        }
        log.info("hybrid: re-ranker training set %s", info)
        return X, y, info

    def _fit_ranker(self, X: np.ndarray, y: np.ndarray) -> TreeEnsemble:
        from sklearn.ensemble import HistGradientBoostingClassifier

        if y.size == 0 or y.all() or not y.any():
            raise ValueError(
                "hybrid: the label period gives no usable training rows (no label user has a "
                "target among the candidates); more data or more candidates are needed"
            )
        p = self.params
        # A column without any value (a source that proposed nothing, e.g. one switched off
        # with 0 candidates) breaks sklearn's binning; a constant one gives the same trees.
        empty = np.isnan(X).all(axis=0)
        if empty.any():
            X = X.copy()
            X[:, empty] = 0.0
        ranker = HistGradientBoostingClassifier(
            learning_rate=float(p["learning_rate"]),
            max_iter=int(p["max_iter"]),
            max_depth=int(p["max_depth"]),
            max_leaf_nodes=int(p["max_leaf_nodes"]),
            min_samples_leaf=int(p["min_samples_leaf"]),
            l2_regularization=float(p["l2_regularization"]),
            early_stopping=False,
            random_state=int(p["random_state"]),
        )
        threads = int(p["ranker_threads"]) or None
        with threadpool_limits(threads, "openmp"):
            ranker.fit(X, y.astype(np.int8))
        return ensemble_from_sklearn(ranker)

    # --- candidates and scoring ---------------------------------------------------------------

    def _feature_names(self) -> list[str]:
        return feature_names([*self.source_names, *OWN_SOURCES])

    def _features(self, ctx: FeatureContext, user_rows: np.ndarray, cand: Candidates) -> np.ndarray:
        """The re-ranker's input: ``candidate_features`` with dropped groups set to 0 (a
        constant column gives the trees no split; an all-NaN one breaks sklearn's binning)."""
        X = candidate_features(ctx, user_rows, cand)
        dropped = self.params.get("drop_feature_groups") or []
        if dropped:
            sizes = (len(ITEM_FEATURES), len(USER_FEATURES), len(PAIR_FEATURES))
            group = np.repeat(np.arange(len(FEATURE_GROUPS)), [*sizes, X.shape[1] - sum(sizes)])
            X[:, np.isin(group, [FEATURE_GROUPS.index(g) for g in dropped])] = 0.0
        return X

    def _candidates(
        self,
        models: dict[str, Recommender],
        ctx: FeatureContext,
        seen: sp.csr_matrix,
        user_rows: np.ndarray,
        exclude_seen: bool,
    ) -> Candidates:
        """Every source's proposals for ``user_rows`` (each with history), merged."""
        p = self.params
        n_items = seen.shape[1]
        user_ids = self._user_ids[user_rows]
        seen_rows = seen[user_rows] if exclude_seen else None
        lists: list[SourceList] = []
        k = int(p["candidates_per_source"])
        for name in self.source_names:
            clock = time.perf_counter()
            preset = (
                self._preset_candidates(name, user_ids, k)
                if models is getattr(self, "models", None) and exclude_seen
                else None
            )
            if preset is None:
                recs = models[name].recommend(user_ids, k=k, exclude_seen=exclude_seen)
                ids, scores = recs.item_ids, recs.scores
            else:
                ids, scores = preset
            cols = np.where(
                ids >= 0, lookup_index(self._item_ids, ids.ravel()).reshape(ids.shape), -1
            )
            lists.append(from_matrix(cols, scores))
            self._tick(f"candidates_{name}", clock)
        clock = time.perf_counter()
        q, cats, share = ctx.user_category_rows(user_rows)
        lists.append(
            category_popular(
                q,
                cats,
                share,
                int(p["categories_per_user"]),
                ctx.cat_items,
                ctx.cat_item_share,
                int(p["category_candidates"]),
                seen_rows,
            )
        )
        lists.append(
            global_list(
                user_rows.size,
                ctx.hot_order,
                ctx.item_hot,
                int(p["trending_candidates"]),
                seen_rows,
            )
        )
        merged = merge_sources(lists, n_items)
        self._tick("candidates_own_and_merge", clock)
        return merged

    @property
    def source_list_depth(self) -> int:
        """How many ranks of each source's list the candidates take (``source_lists`` deeper
        than this are cut)."""
        return int(self.params["candidates_per_source"])

    @contextmanager
    def source_lists(
        self, lists: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    ) -> Iterator[None]:
        """Inside, the named final sources' candidates come from ``lists`` instead of calling
        the source: ``{name: (sorted user ids, (n, K) item ids, (n, K) scores)}``, each the
        source's own ``recommend(user_ids, k=K, exclude_seen=True)`` answer (its
        ``eval_recommendations``, or its lists in the serving bundle). Users not in a source's
        lists are asked of the source; a request for more than K candidates calls it for
        everyone. The Hybrid's evaluation and its bundle lists then cost its features and
        trees, not every source's scoring of the whole catalogue again."""
        self._preset = dict(lists)
        try:
            yield
        finally:
            self._preset = {}

    def _preset_candidates(
        self, name: str, user_ids: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        preset = getattr(self, "_preset", {}).get(name)
        if preset is None or preset[1].shape[1] < k:
            return None
        users, items, scores = preset
        rows = lookup_index(users, user_ids)
        missing = rows < 0
        if missing.all():
            return None
        ids, best = items[rows, :k], scores[rows, :k]
        if missing.any():
            recs = self.models[name].recommend(user_ids[missing], k=k, exclude_seen=True)
            width = recs.item_ids.shape[1]
            ids[missing], best[missing] = -1, -np.inf
            ids[missing, :width], best[missing, :width] = recs.item_ids, recs.scores
        return ids, best

    def _tick(self, key: str, since: float) -> None:
        """Add the seconds since ``since`` to ``score_timings[key]`` (benchmark breakdown)."""
        self.score_timings[key] = self.score_timings.get(key, 0.0) + time.perf_counter() - since

    def _prepare(self) -> None:
        """Score offsets: candidates score >= 0, every other item below (by popularity)."""
        self.score_timings: dict[str, float] = {}
        e = self.ensemble
        lowest = e.baseline + float(e.leaf_value.min(axis=1).sum()) if e.n_trees else e.baseline
        self._raw_floor = lowest
        top = float(self._popularity.max()) if self._popularity.size else 0.0
        share = self._popularity / top if top > 0 else np.zeros_like(self._popularity)
        # in [-2, -1): below every candidate, ordered by popularity, as the base's fallback is
        self._prior = (share - 2.0).astype(np.float32)
        self._prior_order = np.argsort(-self._prior, kind="stable")

    def _ranked(self, user_rows: np.ndarray, exclude_seen: bool) -> tuple[Candidates, np.ndarray]:
        cand = self._candidates(self.models, self.context, self._seen, user_rows, exclude_seen)
        clock = time.perf_counter()
        X = self._features(self.context, user_rows, cand)
        self._tick("features", clock)
        clock = time.perf_counter()
        raw = self.ensemble.predict_raw(X)
        self._tick("trees", clock)
        return cand, (raw - self._raw_floor).astype(np.float32)

    def _recommend_rows(
        self, user_rows: np.ndarray, width: int, exclude_seen: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        cand, scores = self._ranked(user_rows, exclude_seen)
        clock = time.perf_counter()
        out = topk_candidates(
            user_rows.size,
            cand.rows,
            cand.cols,
            scores,
            self.n_items,
            width,
            self._seen[user_rows] if exclude_seen else None,
            prior=self._prior,
            prior_order=self._prior_order,
        )
        self._tick("top_k", clock)
        return out

    def _score(self, user_rows: np.ndarray) -> np.ndarray:
        """Dense scores: the re-ranker's for candidates, the popularity prior elsewhere."""
        cand, scores = self._ranked(user_rows, exclude_seen=True)
        dense = np.broadcast_to(self._prior, (user_rows.size, self.n_items)).copy()
        dense[cand.rows, cand.cols] = scores
        return dense

    def _similar_source(self) -> Recommender:
        name = self.params["similar_source"]
        return self.models.get(name) or self.models[self.source_names[0]]

    def _similar_rows(self, item_cols: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        # every source shares this model's item columns (fitted on the same TrainingData)
        return self._similar_source()._similar_rows(item_cols, width)

    def _score_items(self, item_cols: np.ndarray) -> np.ndarray:
        return self._similar_source()._score_items(item_cols)

    # --- serialisation ----------------------------------------------------------------------

    def reference_sources(self, versions: dict[str, int]) -> None:
        """Serialise the named sources as references to these stored versions of them, not as
        their bytes. The graph's Hybrid reuses the other partitions' stored models, so copying
        them made its payload the sum of theirs (1.7 GB at scale 1.0, and the memory of
        writing and reading it); a referenced Hybrid is loaded inside ``resolving_sources``."""
        self._source_refs = {n: int(v) for n, v in versions.items() if n in self.models}

    def _state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            **self.ensemble.to_arrays("ranker"),
            **self.context.to_arrays("context"),
            "info": _json_array({"info": self.info, "timings": self.timings}),
        }
        refs = getattr(self, "_source_refs", {})
        for name, model in self.models.items():
            if name in refs:
                arrays[f"source_ref_{name}"] = np.array([refs[name]], dtype=np.int64)
            else:
                arrays[f"source_{name}"] = np.frombuffer(model.to_bytes(), dtype=np.uint8)
        return arrays

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        from recsys_assets.core.models.registry import model_from_bytes

        self.source_names = list(self.params["sources"])
        self.models, self._source_refs = {}, {}
        for name in self.source_names:
            if f"source_{name}" in arrays:
                self.models[name] = model_from_bytes(name, arrays[f"source_{name}"].tobytes())
                continue
            version = int(arrays[f"source_ref_{name}"][0])
            resolve = _source_resolver.get()
            if resolve is None:
                raise ValueError(
                    f"hybrid: source {name} is stored as a reference to version {version} of "
                    "the model store; load this model through the store (the Dagster IO "
                    "manager does), or inside hybrid.resolving_sources"
                )
            self.models[name] = resolve(name, version)
            self._source_refs[name] = version
        self.ensemble = TreeEnsemble.from_arrays("ranker", arrays)
        self.context = FeatureContext.from_arrays("context", arrays)
        stored = json.loads(arrays["info"].tobytes().decode())
        self.info, self.timings = stored["info"], stored["timings"]
        self.half_life_days = self.info["hot_half_life_days"]
        self._prepare()


def _params_key(params: dict[str, Any] | None) -> str:
    """Parameters as a comparable, hashable string (key order and value types aside)."""
    return json.dumps(params, sort_keys=True, default=str)


def data_fingerprint(data: TrainingData) -> str:
    """A digest of everything a model can learn from ``data`` (its arrays and user features)."""
    h = hashlib.blake2b(digest_size=16)
    for value in vars(data).values():
        if sp.issparse(value):
            arrays = [value.indptr, value.indices, value.data, np.asarray(value.shape)]
        elif isinstance(value, np.ndarray):
            arrays = [value]
        elif hasattr(value, "hash_rows"):  # polars frame
            arrays = [value.hash_rows(seed=0).to_numpy(), np.asarray(value.columns, dtype=str)]
        else:
            arrays = [np.asarray(repr(value), dtype=str)]
        for a in arrays:
            h.update(str((a.dtype, a.shape)).encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _csr_keys(m: sp.csr_matrix) -> np.ndarray:
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    return rows * m.shape[1] + m.indices.astype(np.int64)


def _json_array(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)
