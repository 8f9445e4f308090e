"""Exact, deterministic top-k over dense score rows.

``torch.topk`` is ~50× faster than ``np.argpartition`` on (batch × catalogue) rows, but its
order among equal scores is unspecified. We ask it for one extra candidate, re-sort the kept
ones by (score desc, column asc), and redo the few rows whose boundary is a tie with an exact
numpy selection, so the answer is the same as a full stable sort would give.
"""

from __future__ import annotations

import numpy as np

# -FLT_MAX and below mean "excluded" (implicit's topk marks filtered items with -FLT_MAX)
EXCLUDED = float(np.finfo(np.float32).min)


def topk_dense(scores: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``width`` columns of each row: (cols int64, scores float32), -1 / -inf where excluded.

    ``scores`` (float32, C-contiguous) may be modified in place (NaN → -inf).
    """
    n, m = scores.shape
    width = min(width, m)
    if n == 0 or width == 0:
        return np.empty((n, width), np.int64), np.empty((n, width), np.float32)
    nan = np.isnan(scores)
    if nan.any():
        scores[nan] = -np.inf
    if width == m:
        cols = np.argsort(-scores, axis=1, kind="stable")
        vals = np.take_along_axis(scores, cols, axis=1)
        return _finish(cols, vals)

    import torch  # lazy: torch is heavy and only needed when ranking

    vals_t, cols_t = torch.topk(torch.from_numpy(scores), width + 1, dim=1, sorted=True)
    vals, cols = vals_t.numpy(), cols_t.numpy().astype(np.int64)
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


def _exact_select(
    scores: np.ndarray, kth: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
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
