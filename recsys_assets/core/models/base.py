"""The one interface every recommender implements (in the spirit of ``implicit``).

A subclass provides ``default_params``, ``search_space``, ``_fit`` and a dense ``_score``; the
base class does the rest: id mapping, the popularity fallback for unknown users or empty
histories, batching, masking of already-seen items, exact top-k with a deterministic tie-break
(higher score first, then lower column index), and byte serialisation.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys_assets.core.cpu import available_cores
from recsys_assets.core.data.training_data import TrainingData, lookup_index
from recsys_assets.core.models.serialization import (
    csr_from_arrays,
    csr_to_arrays,
    pack,
    unpack,
)
from recsys_assets.core.models.topk import topk_dense

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

# Largest dense score block (rows × catalogue) built at once: 2**25 float32 = 128 MiB, so a
# 2048-user batch over a 235k-item catalogue is scored in slices instead of a 1.9 GiB block.
MAX_DENSE_ELEMENTS = 2**25


@dataclass
class Recommendations:
    """Top-k answers, one row per query, in the order the queries were given.

    ``item_ids`` holds external ids (-1 where nothing could be filled, with score -inf);
    ``fallback`` marks rows answered by the popularity fallback instead of the model.
    Iterating yields ``item_ids`` then ``scores`` so ``items, scores = model.recommend(...)``.
    """

    item_ids: np.ndarray
    scores: np.ndarray
    fallback: np.ndarray

    def __iter__(self) -> Iterator[np.ndarray]:
        yield self.item_ids
        yield self.scores

    def __len__(self) -> int:
        return int(self.item_ids.shape[0])

    def to_frame(self, query_ids: np.ndarray, id_name: str = "user_id") -> pl.DataFrame:
        """Long format (``id_name``, rank 1.., item_id, score, fallback), empty slots dropped."""
        n, width = self.item_ids.shape
        query_ids = np.asarray(query_ids)
        if query_ids.shape[0] != n:
            raise ValueError(f"query_ids: {query_ids.shape[0]} ids for {n} recommendation rows")
        keep = (self.item_ids >= 0).ravel()
        return pl.DataFrame(
            {
                id_name: np.repeat(query_ids, width)[keep],
                "rank": np.tile(np.arange(1, width + 1, dtype=np.int32), n)[keep],
                "item_id": self.item_ids.ravel()[keep],
                "score": self.scores.ravel()[keep],
                "fallback": np.repeat(self.fallback, width)[keep],
            }
        )


class Recommender(ABC):
    """Base class: see the module docstring. Subclasses set ``name`` and the abstract hooks."""

    name: ClassVar[str]
    session_aware: ClassVar[bool] = False  # True when _score_sessions is implemented
    # Optuna budget of the tuned_params asset for this model (its run config may override):
    # at most this many trials, and no new trial after this many seconds. A model whose fit
    # is expensive declares a smaller budget here, beside its search space.
    tuning_trials: ClassVar[int] = 6
    tuning_timeout_seconds: ClassVar[float] = 120.0
    # True when ``_recommend_rows`` may run for two batches at once in threads, and mostly
    # outside the GIL (numba kernels, large numpy operations) while the model's own kernels
    # are single-threaded: ``recommend`` then scores batches side by side on every available
    # core. The models whose scoring is one multi-threaded kernel already (implicit's, torch's)
    # leave it False.
    batches_in_threads: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        defaults = self.default_params()
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: unknown parameter(s) {unknown}; "
                f"valid parameters: {sorted(defaults)}"
            )
        self.params: dict[str, Any] = {**defaults, **params}
        self._validate_params()
        self._fitted = False
        self._pop_order: np.ndarray | None = None
        self.fit_seconds: float | None = None

    # --- what a subclass provides -----------------------------------------------------------

    @classmethod
    @abstractmethod
    def default_params(cls) -> dict[str, Any]:
        """Default hyper-parameters; also the set of accepted parameter names."""

    @classmethod
    @abstractmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        """Hyper-parameters suggested by an Optuna ``trial`` (a subset of ``default_params``)."""

    @classmethod
    def tuning_context(cls) -> AbstractContextManager[None]:
        """Entered around a whole tuning study (every trial's fit): a model may keep state
        that trials can share there (the Hybrid reuses its fitted sources). Default: nothing."""
        return nullcontext()

    @abstractmethod
    def _fit(self, data: TrainingData) -> None:
        """Learn model state from ``data`` (id maps, seen matrix and popularity already set)."""

    @abstractmethod
    def _score(self, user_rows: np.ndarray) -> np.ndarray:
        """Dense float32 scores (len(user_rows), n_items) for known user rows; a fresh array."""

    def _score_items(self, item_cols: np.ndarray) -> np.ndarray:
        """Dense similarity of each item to every item (the item itself is masked by the base).

        Default: the popularity vector, i.e. "similar" = most popular.
        """
        return np.broadcast_to(self._popularity, (item_cols.size, self.n_items)).copy()

    def _score_sessions(self, sessions: sp.csr_matrix) -> np.ndarray:
        """Dense next-item scores from recency-weighted session rows (session-aware models)."""
        raise NotImplementedError(f"{type(self).__name__} has no session mode")

    def _session_decay(self) -> float:
        """Weight multiplier per step back in a session (1.0 = all items count the same)."""
        return 1.0

    def _fallback_scores(self, data: TrainingData) -> np.ndarray:
        """Popularity used for unknown users: summed interaction weight per item."""
        return np.asarray(data.user_item.sum(axis=0), dtype=np.float32).ravel()

    def _validate_params(self) -> None:
        """Raise ValueError naming the field when a parameter value is out of range."""
        return None

    def _state_arrays(self) -> dict[str, np.ndarray]:
        """Model-specific fitted arrays to serialise."""
        return {}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what ``_state_arrays`` wrote."""
        return None

    # --- fitting ------------------------------------------------------------------------------

    def fit(self, data: TrainingData) -> Recommender:
        """Fit on ``data``; keeps the seen matrix, id maps and popularity needed for serving."""
        if not isinstance(data, TrainingData):
            raise TypeError(f"fit expects TrainingData, got {type(data).__name__}")
        if data.n_items == 0 or data.n_users == 0:
            raise ValueError("fit: training data has no users or no items")
        start = time.perf_counter()
        self._user_ids = np.asarray(data.user_ids, dtype=np.int64)
        self._item_ids = np.asarray(data.item_ids, dtype=np.int64)
        seen = data.user_item.tocsr().astype(np.float32)
        seen.sort_indices()
        self._seen = seen
        self._popularity = np.asarray(self._fallback_scores(data), dtype=np.float32)
        self._pop_order = None
        log.info(
            "%s: fitting on %d users x %d items (%d nonzeros), params %s",
            self.name,
            data.n_users,
            data.n_items,
            seen.nnz,
            self.params,
        )
        self._fit(data)
        self._fitted = True
        self.fit_seconds = time.perf_counter() - start
        log.info("%s: fitted in %.2fs", self.name, self.fit_seconds)
        return self

    @property
    def is_fitted(self) -> bool:
        return self._fitted

    @property
    def n_items(self) -> int:
        self._check_fitted()
        return int(self._item_ids.size)

    @property
    def n_users(self) -> int:
        self._check_fitted()
        return int(self._user_ids.size)

    @property
    def item_ids(self) -> np.ndarray:
        self._check_fitted()
        return self._item_ids

    @property
    def user_ids(self) -> np.ndarray:
        self._check_fitted()
        return self._user_ids

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError(
                f"{type(self).__name__} ({self.name!r}) is not fitted: call fit(training_data) "
                "or load one with from_bytes()"
            )

    # --- recommending ---------------------------------------------------------------------------

    def recommend(
        self,
        user_ids: np.ndarray | Sequence[int],
        k: int = 10,
        exclude_seen: bool = True,
        batch_size: int = 2048,
    ) -> Recommendations:
        """Top-``k`` items for each external user id (width ``min(k, n_items)``)."""
        self._check_fitted()
        width = self._width(k)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        user_ids = _as_id_array(user_ids, "user_ids")
        rows = lookup_index(self._user_ids, user_ids)
        has_history = rows >= 0
        has_history[has_history] = np.diff(self._seen.indptr)[rows[has_history]] > 0
        out = self._empty(user_ids.size, width, fallback=~has_history)
        self._fill_popular(out, np.flatnonzero(~has_history), width)

        known = np.flatnonzero(has_history)
        batches = [known[start : start + batch_size] for start in range(0, known.size, batch_size)]
        threads = min(available_cores(), len(batches)) if self.batches_in_threads else 1
        with ThreadPoolExecutor(threads) if threads > 1 else nullcontext() as pool:
            answers = (pool.map if pool is not None else map)(
                lambda idx: self._recommend_rows(rows[idx], width, exclude_seen), batches
            )
            for idx, (cols, vals) in zip(batches, answers, strict=True):
                self._put(out, idx, cols, vals)
        return out

    def _recommend_rows(
        self, user_rows: np.ndarray, width: int, exclude_seen: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """(cols, scores) of the top ``width`` for known user rows, through dense ``_score``."""
        exclude = self._seen[user_rows] if exclude_seen else None
        return self._dense_topk(user_rows, self._score, width, exclude)

    def similar_items(
        self, item_ids: np.ndarray | Sequence[int], k: int = 10, batch_size: int = 2048
    ) -> Recommendations:
        """The ``k`` items most similar to each item (never the item itself).

        Unknown items get the popular items, flagged as fallback.
        """
        self._check_fitted()
        width = self._width(k)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        item_ids = _as_id_array(item_ids, "item_ids")
        cols = lookup_index(self._item_ids, item_ids)
        known = cols >= 0
        out = self._empty(item_ids.size, width, fallback=~known)
        self._fill_popular(out, np.flatnonzero(~known), width)
        known_idx = np.flatnonzero(known)
        for start in range(0, known_idx.size, batch_size):
            idx = known_idx[start : start + batch_size]
            top_cols, top_vals = self._similar_rows(cols[idx], width)
            self._put(out, idx, top_cols, top_vals)
        return out

    def _similar_rows(self, item_cols: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(cols, scores) of the items most similar to ``item_cols``, through ``_score_items``."""
        self_mask = sp.csr_matrix(
            (np.ones(item_cols.size, np.float32), (np.arange(item_cols.size), item_cols)),
            shape=(item_cols.size, self.n_items),
        )
        return self._dense_topk(
            np.arange(item_cols.size), lambda p: self._score_items(item_cols[p]), width, self_mask
        )

    def recommend_session(
        self,
        sessions: Sequence[np.ndarray],
        k: int = 20,
        exclude_seen: bool = False,
        batch_size: int = 2048,
    ) -> Recommendations:
        """Next-item top-``k`` for each session (a sequence of item ids, most recent last).

        Models without a session mode answer with popularity (flagged as fallback), as do
        sessions with no item known to the model. ``exclude_seen`` drops the session's items.
        """
        self._check_fitted()
        width = self._width(k)
        matrix = self.session_matrix(sessions)
        has_items = np.diff(matrix.indptr) > 0
        out = self._empty(matrix.shape[0], width, fallback=np.ones(matrix.shape[0], bool))
        model_rows = np.flatnonzero(has_items) if self.session_aware else np.empty(0, np.int64)
        out.fallback[model_rows] = False
        pop_rows = np.flatnonzero(out.fallback)
        if exclude_seen:
            for start in range(0, pop_rows.size, batch_size):
                idx = pop_rows[start : start + batch_size]
                cols, vals = self._popular_topk_excluding(matrix[idx], width)
                self._put(out, idx, cols, vals)
        else:
            self._fill_popular(out, pop_rows, width)
        for start in range(0, model_rows.size, batch_size):
            idx = model_rows[start : start + batch_size]
            sub = matrix[idx]
            cols, vals = self._session_topk(sub, width, sub if exclude_seen else None)
            self._put(out, idx, cols, vals)
        return out

    def _session_topk(
        self, sessions: sp.csr_matrix, width: int, exclude: sp.csr_matrix | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(cols, scores) for session rows, through dense ``_score_sessions``."""
        return self._dense_topk(
            np.arange(sessions.shape[0]),
            lambda p: self._score_sessions(sessions[p]),
            width,
            exclude,
        )

    def session_matrix(self, sessions: Sequence[np.ndarray]) -> sp.csr_matrix:
        """(n_sessions, n_items) CSR of weights ``decay ** steps_back``; unknown ids dropped.

        Repeated items add up, so an item viewed twice counts more.
        """
        self._check_fitted()
        lengths = np.fromiter((len(s) for s in sessions), dtype=np.int64, count=len(sessions))
        n = lengths.size
        if lengths.sum() == 0:
            return sp.csr_matrix((n, self.n_items), dtype=np.float32)
        flat = np.concatenate([np.asarray(s, dtype=np.int64).ravel() for s in sessions])
        row = np.repeat(np.arange(n), lengths)
        ends = np.cumsum(lengths)
        steps_back = ends[row] - 1 - np.arange(flat.size)
        weight = np.power(self._session_decay(), steps_back).astype(np.float32)
        col = lookup_index(self._item_ids, flat)
        ok = col >= 0
        m = sp.csr_matrix(
            (weight[ok], (row[ok], col[ok])), shape=(n, self.n_items), dtype=np.float32
        )
        m.sum_duplicates()
        return m

    # --- shared machinery -------------------------------------------------------------------

    @staticmethod
    def _width_for(k: int, n_items: int) -> int:
        if not isinstance(k, int | np.integer) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        return int(min(k, n_items))

    def _width(self, k: int) -> int:
        return self._width_for(k, self.n_items)

    @staticmethod
    def _empty(n: int, width: int, fallback: np.ndarray) -> Recommendations:
        return Recommendations(
            item_ids=np.full((n, width), -1, dtype=np.int64),
            scores=np.full((n, width), -np.inf, dtype=np.float32),
            fallback=np.asarray(fallback, dtype=bool).copy(),
        )

    def _put(self, out: Recommendations, idx: np.ndarray, cols: np.ndarray, vals: np.ndarray):
        ids = np.where(cols >= 0, self._item_ids[np.maximum(cols, 0)], -1)
        out.item_ids[idx] = ids
        out.scores[idx] = np.where(cols >= 0, vals, -np.inf)

    def _popular_order(self) -> np.ndarray:
        # stable sort keeps the lower column first among equal popularity
        if self._pop_order is None:
            self._pop_order = np.argsort(-self._popularity, kind="stable")
        return self._pop_order

    def _fill_popular(self, out: Recommendations, idx: np.ndarray, width: int) -> None:
        if idx.size == 0:
            return
        cols = self._popular_order()[:width]
        self._put(out, idx, cols[None, :], self._popularity[cols][None, :])

    def _popular_topk_excluding(
        self, exclude: sp.csr_matrix, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Most popular items per row, skipping that row's excluded columns.

        Only the ``width + max excluded`` most popular items can be needed, so rows are ranked
        over that short candidate list instead of the whole catalogue.
        """
        n = exclude.shape[0]
        order = self._popular_order()
        per_row = np.diff(exclude.indptr)
        n_cand = int(min(order.size, width + (per_row.max() if n else 0)))
        cand = order[:n_cand]
        pos = np.full(self.n_items, -1, dtype=np.int64)
        pos[cand] = np.arange(n_cand)
        hit = pos[exclude.indices]
        blocked = np.zeros((n, n_cand), dtype=bool)
        rr = np.repeat(np.arange(n), per_row)
        blocked[rr[hit >= 0], hit[hit >= 0]] = True
        first_free = np.argsort(blocked, axis=1, kind="stable")[:, :width]
        cols = cand[first_free]
        vals = self._popularity[cols]
        ok = ~np.take_along_axis(blocked, first_free, axis=1)
        return np.where(ok, cols, -1), np.where(ok, vals, -np.inf).astype(np.float32)

    def _dense_topk(
        self,
        rows: np.ndarray,
        score_fn: Any,
        width: int,
        exclude: sp.csr_matrix | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score ``rows`` in memory-bounded slices, mask ``exclude`` (aligned rows), take top-k."""
        n = rows.size
        cols = np.empty((n, width), dtype=np.int64)
        vals = np.empty((n, width), dtype=np.float32)
        step = max(1, MAX_DENSE_ELEMENTS // max(1, self.n_items))
        for start in range(0, n, step):
            stop = min(n, start + step)
            scores = np.ascontiguousarray(score_fn(rows[start:stop]), dtype=np.float32)
            if exclude is not None:
                mask_rows(scores, exclude[start:stop])
            cols[start:stop], vals[start:stop] = topk_dense(scores, width)
        return cols, vals

    # --- serialisation ----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Params, id maps, seen matrix, popularity and model state as a pickle-free archive."""
        self._check_fitted()
        arrays = {
            "user_ids": self._user_ids,
            "item_ids": self._item_ids,
            "popularity": self._popularity,
            **csr_to_arrays("seen", self._seen),
        }
        for key, value in self._state_arrays().items():
            arrays[f"state_{key}"] = value
        meta = {"model": self.name, "params": self.params, "fit_seconds": self.fit_seconds}
        return pack(arrays, meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> Recommender:
        """Load a model written by ``to_bytes``: of this class, or of any registered model when
        called on ``Recommender`` itself."""
        arrays, meta = unpack(data)
        if cls is Recommender:
            cls = _loaded_subclass(str(meta.get("model")))
        if meta.get("model") != cls.name:
            raise ValueError(f"model bytes hold a {meta.get('model')!r} model, not {cls.name!r}")
        model = cls(**meta["params"])
        model._user_ids = arrays["user_ids"]
        model._item_ids = arrays["item_ids"]
        model._popularity = arrays["popularity"]
        model._seen = csr_from_arrays("seen", arrays)
        model._load_state({k[6:]: v for k, v in arrays.items() if k.startswith("state_")})
        model.fit_seconds = meta.get("fit_seconds")
        model._fitted = True
        return model

    def __repr__(self) -> str:
        state = "fitted" if self._fitted else "not fitted"
        return f"{type(self).__name__}({self.params}, {state})"


def _loaded_subclass(name: str) -> type[Recommender]:
    """The imported concrete subclass called ``name``.

    Walks the subclasses instead of importing the registry, which imports every model module
    and so would make base depend on its own subclasses (the registry's ``load_model`` is the
    place that dispatches by name with every model loaded).
    """
    pending = list(Recommender.__subclasses__())
    while pending:
        sub = pending.pop()
        if getattr(sub, "name", None) == name:
            return sub
        pending.extend(sub.__subclasses__())
    raise ValueError(f"model bytes hold a {name!r} model, and no such model class is imported")


def mask_rows(scores: np.ndarray, exclude: sp.csr_matrix) -> None:
    """Set ``scores[i, j] = -inf`` for every stored (i, j) of ``exclude`` (rows aligned)."""
    rr = np.repeat(np.arange(exclude.shape[0]), np.diff(exclude.indptr))
    scores[rr, exclude.indices] = -np.inf


def normalize_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    """Row-wise L2 normalisation of a sparse matrix; all-zero rows stay zero."""
    m = m.tocsr().astype(np.float32)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.diags((1.0 / norms).astype(np.float32)) @ m


def _as_id_array(ids: np.ndarray | Sequence[int], field: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"{field} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{field} must hold integer ids, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)
