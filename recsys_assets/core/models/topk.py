"""Exact, deterministic top-k over dense score rows.

:func:`top_unordered` (a numba kernel, or ``torch.topk`` without numba; either is far faster
than ``np.argpartition`` on (batch × catalogue) rows) gives one extra candidate per row; the
kept ones are re-sorted by (score desc, column asc), and the few rows whose boundary is a tie
are redone with an exact numpy selection (torch.topk's choice among equal scores is
unspecified), so the answer is the same as a full stable sort would give.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)

# -FLT_MAX and below mean "excluded" (implicit's topk marks filtered items with -FLT_MAX)
EXCLUDED = float(np.finfo(np.float32).min)

# Switch for the numba selection of top_unordered (tests set it False for the torch path)
ENABLED = True
_jit = None  # topk_jit once imported; False when numba could not be imported


def _kernels():
    global _jit
    if _jit is None:
        try:
            from recsys_assets.core.models import topk_jit
        # ImportError: no numba (or one built for another numpy); RuntimeError: no writable
        # cache folder for numba (set NUMBA_CACHE_DIR)
        except (ImportError, RuntimeError) as exc:
            log.warning("numba top-k unavailable, torch.topk instead: %s", exc)
            _jit = False
        else:
            _jit = topk_jit
    return _jit if ENABLED else False


def top_unordered(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, int64 columns) of the ``k`` largest entries of each row, in no order.

    ``scores`` (n, m) float32. Among entries equal to the k-th value the numba path keeps
    the lowest columns, the torch path (no numba) any of them; NaN should not occur (the
    numba path ranks it below everything, torch above).

    torch.topk spent 2.3-4 ns an entry on (users x catalogue) rows (k = 101 of 163k, 1,000 of
    221k), as long as the product that made the scores. The kernel reads a row once, keeping
    only entries above the running k-th value (most 32-entry chunks cost one vectorised
    compare), and cuts its buffer back to the top k when it fills.
    """
    n, m = scores.shape
    k = min(k, m)
    jit = _kernels()
    if jit is False or k <= 0 or n == 0:
        import torch  # lazy: torch is heavy and only needed when ranking

        vals, cols = torch.topk(torch.from_numpy(scores), k, dim=1, sorted=False)
        return vals.numpy(), cols.numpy().astype(np.int64)
    vals = np.empty((n, k), np.float32)
    cols = np.empty((n, k), np.int64)
    jit.select_rows(np.ascontiguousarray(scores, dtype=np.float32), k, vals, cols)
    return vals, cols


def topk_dense(scores: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``width`` columns of each row: (cols int64, scores float32), -1 / -inf where excluded.

    ``scores`` (float32, C-contiguous) may be modified in place (NaN → -inf).
    """
    n, m = scores.shape
    width = min(width, m)
    if n == 0 or width == 0:
        return np.empty((n, width), np.int64), np.empty((n, width), np.float32)
    if width == m or _kernels() is False:
        # (the numba selection ranks NaN below -inf by itself: no pass over the block)
        nan = np.isnan(scores)
        if nan.any():
            scores[nan] = -np.inf
    if width == m:
        cols = np.argsort(-scores, axis=1, kind="stable")
        vals = np.take_along_axis(scores, cols, axis=1)
        return _finish(cols, vals)

    vals, cols = top_unordered(scores, width + 1)
    order = np.argsort(-vals, axis=1, kind="stable")
    vals = np.take_along_axis(vals, order, axis=1)
    cols = np.take_along_axis(cols, order, axis=1)
    boundary = vals[:, width - 1]
    tied = (boundary == vals[:, width]) & (boundary > EXCLUDED)
    vals, cols = vals[:, :width].copy(), cols[:, :width].copy()
    if tied.any():
        rows = np.flatnonzero(tied)
        cols[rows], vals[rows] = _exact_select(scores[rows], boundary[rows], width)
    return _finish(*sort_candidates(cols, vals))


def sort_candidates(cols: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row's candidates by score descending, then column ascending."""
    order = np.lexsort((cols, -vals), axis=-1)
    return np.take_along_axis(cols, order, axis=1), np.take_along_axis(vals, order, axis=1)


def _exact_select(scores: np.ndarray, kth: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """All columns above the k-th value plus the lowest-indexed columns equal to it."""
    above = scores > kth[:, None]
    equal = scores == kth[:, None]
    need = width - above.sum(axis=1)
    chosen = above | (equal & (np.cumsum(equal, axis=1) <= need[:, None]))
    r, c = np.nonzero(chosen)
    cols = c.reshape(scores.shape[0], width).astype(np.int64)
    return cols, scores[r, c].reshape(scores.shape[0], width)


def _finish(cols: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vals = vals.astype(np.float32, copy=False)
    excluded = ~(vals > EXCLUDED)
    cols = np.where(excluded, -1, cols).astype(np.int64)
    vals = np.where(excluded, np.float32(-np.inf), vals)
    return cols, vals


def topk_candidates(
    n_rows: int,
    rows: np.ndarray,
    cols: np.ndarray,
    vals: np.ndarray,
    n_cols: int,
    width: int,
    exclude: sp.csr_matrix | None = None,
    prior: np.ndarray | None = None,
    prior_order: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``width`` per row when only a few entries of each row differ from a prior.

    The score of (r, j) is ``vals`` where (r, j) is a candidate (no duplicates), else
    ``prior[j]`` (or excluded when ``prior`` is None). Candidate values must be >= their prior:
    then only the ``width + n_excluded(r)`` best prior columns can beat the candidates, so a row
    is ranked over its candidates plus that short list instead of the whole catalogue.
    ``prior_order`` lists columns by prior descending, ties by column ascending.
    """
    m = n_cols
    rows = rows.astype(np.int64, copy=False)
    cols = cols.astype(np.int64, copy=False)
    vals = vals.astype(np.float32, copy=False)
    keys = rows * m + cols
    n_excl = np.zeros(n_rows, np.int64) if exclude is None else np.diff(exclude.indptr)
    if prior is not None:
        take = np.minimum(width + n_excl, m)
        p_rows = np.repeat(np.arange(n_rows, dtype=np.int64), take)
        offset = np.arange(p_rows.size) - np.repeat(np.cumsum(take) - take, take)
        p_cols = prior_order[offset].astype(np.int64)
        p_keys = p_rows * m + p_cols
        fresh = ~np.isin(p_keys, keys, kind="sort")
        rows = np.concatenate([rows, p_rows[fresh]])
        cols = np.concatenate([cols, p_cols[fresh]])
        vals = np.concatenate([vals, prior[p_cols[fresh]].astype(np.float32)])
        keys = np.concatenate([keys, p_keys[fresh]])
    if exclude is not None and exclude.nnz:
        e_rows = np.repeat(np.arange(n_rows, dtype=np.int64), n_excl)
        keep = ~np.isin(keys, e_rows * m + exclude.indices, kind="sort")
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    keep = vals > EXCLUDED
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    rank = np.arange(rows.size) - np.searchsorted(rows, rows, side="left")
    top = rank < width
    out_cols = np.full((n_rows, width), -1, dtype=np.int64)
    out_vals = np.full((n_rows, width), -np.inf, dtype=np.float32)
    out_cols[rows[top], rank[top]] = cols[top]
    out_vals[rows[top], rank[top]] = vals[top]
    return out_cols, out_vals


def column_positions(cols: np.ndarray, n_cols: int) -> np.ndarray:
    """``pos[j]``: the index of column ``j`` in ``cols`` (ascending), -1 where absent."""
    pos = np.full(n_cols, -1, dtype=np.int64)
    pos[cols] = np.arange(cols.size)
    return pos


def restrict_columns(m: sp.csr_matrix, pos: np.ndarray) -> sp.csr_matrix:
    """The entries of ``m`` in the kept columns, renumbered by ``pos`` (-1: dropped), so a
    mask of the full catalogue lines up with scores over a subset of it."""
    new = pos[m.indices]
    keep = new >= 0
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    indptr = np.r_[0, np.cumsum(np.bincount(rows[keep], minlength=m.shape[0]))]
    n_sub = int(pos.max()) + 1 if pos.size else 0
    return sp.csr_matrix((m.data[keep], new[keep], indptr), shape=(m.shape[0], n_sub))


def map_columns(cols: np.ndarray, subset: np.ndarray, width: int) -> np.ndarray:
    """Subset positions (-1 = empty) back to catalogue columns, padded with -1 to ``width``."""
    out = np.where(cols >= 0, subset[np.maximum(cols, 0)], -1)
    if out.shape[1] < width:
        out = np.pad(out, ((0, 0), (0, width - out.shape[1])), constant_values=-1)
    return out
