"""Exact, deterministic top-k over dense score rows.

:func:`top_unordered` (a numba kernel, or ``torch.topk`` without numba; either is far faster
than ``np.argpartition`` on (batch × catalogue) rows) gives one extra candidate per row; the
kept ones are re-sorted by (score desc, column asc), and the few rows whose boundary is a tie
are redone with an exact numpy selection (torch.topk's choice among equal scores is
unspecified), so the answer is the same as a full stable sort would give.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys_assets.core.models.optional_numba import import_kernels

# -FLT_MAX and below mean "excluded" (implicit's topk marks filtered items with -FLT_MAX)
EXCLUDED = float(np.finfo(np.float32).min)

# Switch for the numba selection of top_unordered (tests set it False for the torch path)
ENABLED = True
# Columns scored at once by tiled_top: a (rows x TILE) tile of 150-200 rows stays in L2
TILE = 2048
_jit = None  # topk_jit once imported; False when numba could not be imported


def _kernels():
    global _jit
    if _jit is None:
        _jit = import_kernels("topk_jit", "torch.topk")
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


def tiled_available() -> bool:
    """Whether :func:`tiled_top` can run (it needs the numba kernels)."""
    return _kernels() is not False


def tiled_top(
    n: int,
    m: int,
    k: int,
    score_into,
    exclude: sp.csr_matrix | None,
    tile: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(values, columns) of each row's top ``k`` by (value desc, column asc), in no order,
    from scores made ``tile`` columns at a time and never kept whole.

    ``score_into(c0, c1, out)`` writes the n rows' scores of columns [c0, c1) into ``out``
    (n, c1 - c0), float32 C-contiguous (always all rows: products of other shapes, one row
    above all, may round differently).
    ``exclude`` (n rows, CSR with sorted indices, m columns): entries never ranked. A row's
    tile is scanned while it is in the cache (the whole (rows x catalogue) block, 128 MiB,
    went to memory and was read back for the selection): a starting threshold from a
    sample of 64 runs of 64 columns, then :func:`topk_jit.scan_tile` over the tiles. Rows
    that keep fewer than ``k`` entries (few left once excluded, NaN, or a sample that
    misjudged the row) are scored whole again and ranked like :func:`topk_dense` ranks
    (excluded and NaN as -inf).
    Needs the numba kernels (:func:`tiled_available`).
    """
    jit = _kernels()
    k = min(k, m)
    tile = TILE if tile is None else tile
    if exclude is None:
        ex_indptr, ex_idx = np.zeros(n + 1, np.int64), np.zeros(0, np.int64)
    else:
        ex_indptr = exclude.indptr.astype(np.int64)
        ex_idx = exclude.indices.astype(np.int64)
    t = np.full(n, -np.inf, np.float32)
    n_seg, seg = min(64, m // 256), 64
    if n_seg > 0:
        starts = np.arange(n_seg) * (m // n_seg)
        sample = np.empty((n_seg, n, seg), np.float32)
        for s, c0 in enumerate(starts):
            score_into(int(c0), int(c0) + seg, sample[s])
        sample = np.ascontiguousarray(sample.transpose(1, 0, 2).reshape(n, n_seg * seg))
        sample_cols = (starts[:, None] + np.arange(seg)).ravel().astype(np.int64)
        jit.sample_thresholds(sample, sample_cols, k, m, ex_indptr, ex_idx, t)
    size = max(4 * k, 2048) + jit._CHUNK
    buf_v = np.empty((n, size), np.float32)
    buf_c = np.empty((n, size), np.int64)
    cnt = np.zeros(n, np.int64)
    ex_ptr = ex_indptr[:-1].copy()
    block = np.empty((n, min(tile, m)), np.float32)
    for c0 in range(0, m, tile):
        c1 = min(m, c0 + tile)
        out = block if c1 - c0 == block.shape[1] else np.empty((n, c1 - c0), np.float32)
        score_into(c0, c1, out)
        jit.scan_tile(out, c0, k, t, cnt, buf_v, buf_c, ex_ptr, ex_indptr, ex_idx)
    vals = np.empty((n, k), np.float32)
    cols = np.empty((n, k), np.int64)
    failed = np.zeros(n, np.bool_)
    jit.finish_rows(k, cnt, buf_v, buf_c, vals, cols, failed)
    if failed.any():
        rows = np.flatnonzero(failed)
        dense = np.empty((rows.size, m), np.float32)
        for c0 in range(0, m, tile):
            c1 = min(m, c0 + tile)
            out = block if c1 - c0 == block.shape[1] else np.empty((n, c1 - c0), np.float32)
            score_into(c0, c1, out)  # all rows again: the same products
            dense[:, c0:c1] = out[rows]
        dense[np.isnan(dense)] = -np.inf
        if exclude is not None:
            sub = exclude[rows]
            dense[np.repeat(np.arange(rows.size), np.diff(sub.indptr)), sub.indices] = -np.inf
        vals[rows], cols[rows] = top_unordered(dense, k)
    return vals, cols


def tiled_topk_dense(
    n: int,
    m: int,
    width: int,
    score_into,
    exclude: sp.csr_matrix | None,
    tile: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """What :func:`topk_dense` gives for the (n, m) scores of ``score_into`` with
    ``exclude`` masked to -inf, through :func:`tiled_top`."""
    width = min(width, m)
    if n == 0 or width == 0:
        return np.empty((n, width), np.int64), np.empty((n, width), np.float32)
    vals, cols = tiled_top(n, m, width, score_into, exclude, tile)
    return _finish(*sort_candidates(cols, vals))


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
