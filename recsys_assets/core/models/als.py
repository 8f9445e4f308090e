"""Implicit-feedback matrix factorisation through ``implicit``'s CPU ALS (conjugate gradient)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys_assets.core.cpu import resolve_threads
from recsys_assets.core.data.training_data import TrainingData
from recsys_assets.core.models.base import Recommender
from recsys_assets.core.models.topk import (
    EXCLUDED,
    column_positions,
    restrict_columns,
    sort_candidates,
)
from recsys_assets.core.models.weighting import WEIGHTINGS, weight_interactions

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

# at most one progress line per this many seconds of a fit (and one for the last iteration)
PROGRESS_SECONDS = 5.0


class ALSRecommender(Recommender):
    """Hu-Koren-Volinsky ALS; confidence = ``alpha`` × (optionally BM25/TF-IDF) weight."""

    name: ClassVar[str] = "als"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {
            "factors": 64,
            "iterations": 15,
            "regularization": 0.05,
            "alpha": 2.0,
            "weighting": "none",
            "bm25_k1": 100.0,
            "bm25_b": 0.8,
            "random_state": 42,
            "num_threads": 0,
        }

    @classmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "factors": trial.suggest_int("factors", 16, 256, log=True),
            "iterations": trial.suggest_int("iterations", 5, 30),
            "regularization": trial.suggest_float("regularization", 1e-3, 1.0, log=True),
            "alpha": trial.suggest_float("alpha", 0.5, 50.0, log=True),
            "weighting": trial.suggest_categorical("weighting", list(WEIGHTINGS)),
        }

    def _validate_params(self) -> None:
        p = self.params
        for key in ("factors", "iterations"):
            if not (isinstance(p[key], int | np.integer) and p[key] > 0):
                raise ValueError(f"{key} must be a positive integer, got {p[key]!r}")
        for key in ("regularization", "alpha", "bm25_k1"):
            if not p[key] > 0:
                raise ValueError(f"{key} must be > 0, got {p[key]!r}")
        if p["weighting"] not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {p['weighting']!r}")

    def _fit(self, data: TrainingData) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        p = self.params
        matrix = weight_interactions(data.user_item, p["weighting"], p["bm25_k1"], p["bm25_b"])
        # implicit's own threads do the work; a multi-threaded BLAS inside them oversubscribes
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=int(p["factors"]),
                regularization=float(p["regularization"]),
                alpha=float(p["alpha"]),
                dtype=np.float32,
                iterations=int(p["iterations"]),
                num_threads=resolve_threads(int(p["num_threads"])),
                random_state=p["random_state"],
            )
            model.fit(matrix, show_progress=False, callback=self._log_iteration)
        self.user_factors = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        item_factors = np.array(model.item_factors, dtype=np.float32)
        # An item without any interaction learnt nothing: its factor is the random start
        # shrunk by the solver, noise around 0. Zero it, so that it scores exactly 0 and
        # ranking can skip it (see _recommend_rows)
        item_factors[np.diff(matrix.tocsc().indptr) == 0] = 0.0
        self.item_factors = item_factors
        self._prepare()

    def _prepare(self) -> None:
        self._item_unit: np.ndarray | None = None
        # the items with a nonzero factor: only they can score above 0
        active = np.flatnonzero(np.any(self.item_factors != 0, axis=1))
        self._active = active if active.size < self.item_factors.shape[0] else None
        self._active_factors = (
            np.ascontiguousarray(self.item_factors[active]) if self._active is not None else None
        )

    def _log_iteration(self, iteration: int, elapsed: float, loss: float) -> None:
        # implicit calls back after every iteration (loss is NaN unless it was asked to compute
        # it). One line per iteration made 23 of `make run`'s terminal lines per fit at 0.14 s
        # each; a line every PROGRESS_SECONDS, and for the last iteration, still shows a
        # minute-long fit at scale 1.0 moving.
        n = int(self.params["iterations"])
        now = time.perf_counter()
        if iteration == 0:
            self._fit_clock = self._last_progress = now - elapsed
        if iteration + 1 == n or now - self._last_progress >= PROGRESS_SECONDS:
            self._last_progress = now
            log.info(
                "als: iteration %d/%d, %.2fs (%.1fs so far)",
                iteration + 1,
                n,
                elapsed,
                now - self._fit_clock,
            )

    def _score(self, user_rows: np.ndarray) -> np.ndarray:
        return self.user_factors[user_rows] @ self.item_factors.T

    def _recommend_rows(
        self, user_rows: np.ndarray, width: int, exclude_seen: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``width`` through implicit's kernel, over the items with a factor only.

        Items without interactions score exactly 0 (their factors are zeroed in ``_fit``):
        ranking the others first is exact for every row whose ``width``-th score is above 0,
        and the rare other rows are ranked over the whole catalogue. At scale 1.0 this skips
        about half of the 417k items, which was half of the Hybrid's ALS candidate time.
        """
        exclude = self._seen[user_rows] if exclude_seen else None

        def exact(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return Recommender._recommend_rows(self, user_rows[idx], width, exclude_seen)

        active = self._active
        if active is None or active.size <= width:
            return self._factor_topk(
                self.item_factors, self.user_factors[user_rows], width, exclude, exact
            )
        if exclude is not None:
            exclude = restrict_columns(exclude, column_positions(active, self.n_items))
        cols, vals = self._factor_topk(
            self._active_factors, self.user_factors[user_rows], width, exclude, exact, active
        )
        redo = np.flatnonzero(~(vals[:, width - 1] > 0))
        if redo.size:
            cols[redo], vals[redo] = exact(redo)
        return cols, vals

    def _similar_rows(self, item_cols: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        unit = self._unit_item_factors()
        itself = sp.csr_matrix(
            (np.ones(item_cols.size, np.float32), (np.arange(item_cols.size), item_cols)),
            shape=(item_cols.size, self.n_items),
        )
        return self._factor_topk(
            unit,
            unit[item_cols],
            width,
            itself,
            lambda idx: Recommender._similar_rows(self, item_cols[idx], width),
        )

    def _factor_topk(
        self,
        items: np.ndarray,
        queries: np.ndarray,
        width: int,
        exclude: sp.csr_matrix | None,
        exact: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
        columns: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of ``queries @ items.T`` through implicit's fused kernel, ties made exact.

        implicit's multi-threaded blocked matmul + heap top-k beats a dense (queries ×
        catalogue) block several times over, but orders ties arbitrarily: one extra candidate
        reveals a tie at the cut-off, and only those rare rows are redone by ``exact``.
        ``columns`` (ascending) maps the rows of ``items`` to catalogue columns when they
        are a subset of the catalogue (``exact`` answers in catalogue columns).
        """
        from implicit.cpu.topk import topk

        want = min(width + 1, items.shape[0])
        with threadpool_limits(1, "blas"):
            cols, vals = topk(
                items,
                queries,
                want,
                filter_query_items=exclude,
                num_threads=resolve_threads(int(self.params["num_threads"])),
            )
        cols = cols.astype(np.int64)
        if columns is not None:
            cols = np.where(cols >= 0, columns[np.maximum(cols, 0)], cols)
        cols, vals = sort_candidates(cols, vals.astype(np.float32))
        if want > width:
            tied = (vals[:, width - 1] == vals[:, width]) & (vals[:, width - 1] > EXCLUDED)
            cols, vals = cols[:, :width].copy(), vals[:, :width].copy()
            if tied.any():
                rows = np.flatnonzero(tied)
                cols[rows], vals[rows] = exact(rows)
        excluded = ~(vals > EXCLUDED)
        return np.where(excluded, -1, cols), np.where(excluded, -np.inf, vals).astype(np.float32)

    def _unit_item_factors(self) -> np.ndarray:
        if self._item_unit is None:
            norms = np.linalg.norm(self.item_factors, axis=1, keepdims=True)
            self._item_unit = np.ascontiguousarray(
                self.item_factors / np.maximum(norms, 1e-12), dtype=np.float32
            )
        return self._item_unit

    def _score_items(self, item_cols: np.ndarray) -> np.ndarray:
        unit = self._unit_item_factors()
        return unit[item_cols] @ unit.T

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_factors = arrays["user_factors"]
        self.item_factors = arrays["item_factors"]
        self._prepare()
