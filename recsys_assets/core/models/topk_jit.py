"""The numba kernel behind :func:`topk.top_unordered` (imported on first use; see there)."""

from __future__ import annotations

import numba
import numpy as np

# The starting threshold is sampled from up to _SEGMENTS runs of _SEG consecutive entries
# spread over the row (single entries at a stride cost a cache miss each: ~0.25 ms a row)
_SEG = 64
_SEGMENTS = 64
# Entries compared at once: a chunk with none at or above the threshold costs one vectorised
# count (a plain compare-and-branch loop ran 2.3x as long), one with some is appended
# branch-free
_CHUNK = 16


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _compact(buf_v, buf_c, cnt, k):
    """Keep the top ``k`` of the first ``cnt`` buffered entries (in column order: among equal
    values the earlier, lower, columns), in order; returns the k-th value."""
    kth = np.partition(buf_v[:cnt].copy(), cnt - k)[cnt - k]
    above = 0
    for j in range(cnt):
        above += buf_v[j] > kth
    ties = k - above  # how many entries equal to the k-th value stay
    out = 0
    for j in range(cnt):
        v = buf_v[j]
        if v > kth or (v == kth and ties > 0):
            if v == kth:
                ties -= 1
            buf_v[out] = v
            buf_c[out] = buf_c[j]
            out += 1
    return kth


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _scan(row, t, k, buf_v, buf_c):
    """Buffer the entries >= ``t`` in column order, cutting the buffer back to its top ``k``
    (and raising ``t`` to its k-th value) whenever it fills; returns the count buffered."""
    m = row.size
    cap = buf_v.size - _CHUNK  # room for one chunk appended in full
    cnt = 0
    n_full = m // _CHUNK
    for c in range(n_full + 1):
        start = c * _CHUNK
        stop = m if c == n_full else start + _CHUNK
        if c < n_full:
            hits = 0
            for j in range(start, start + _CHUNK):  # a fixed trip count: vectorised
                hits += row[j] >= t
            if hits == 0:
                continue
        if cnt > cap:
            t = _compact(buf_v, buf_c, cnt, k)
            cnt = k
        for j in range(start, stop):  # every entry written, the count moved by the hits
            v = row[j]
            buf_v[cnt] = v
            buf_c[cnt] = j
            cnt += v >= t
    return cnt


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _select_row(row, k, vals, cols, sample, buf_v, buf_c):
    """The top ``k`` of ``row`` by (value desc, column asc) into ``vals``/``cols``, any order.

    The starting threshold is the q-th largest of a sample of the row (~2k entries of the
    row expected at or above it). The buffer keeps columns in order, so a cut back to the top k
    keeps the lowest columns among equal values, as would a stable sort of the whole row.
    Should fewer than ``k`` entries reach the sampled threshold, the row is scanned again
    from -inf (and should NaNs leave fewer than ``k`` even then, once more with NaN as -inf).
    """
    m = row.size
    n_seg = min(_SEGMENTS, m // (4 * _SEG))
    n_s = n_seg * _SEG
    cnt = 0
    if n_seg > 0:
        spacing = m // n_seg
        for s in range(n_seg):
            for j in range(_SEG):
                sample[s * _SEG + j] = row[s * spacing + j]
        q = min(n_s, max(16, (2 * k * n_s) // m))
        t = np.partition(sample[:n_s], n_s - q)[n_s - q]
        cnt = _scan(row, t, k, buf_v, buf_c)
    if cnt < k:
        cnt = _scan(row, -np.inf, k, buf_v, buf_c)
    if cnt < k:  # NaNs: they rank as -inf (last, lowest columns first)
        cnt = 0
        for j in range(row.size):
            v = row[j]
            buf_v[cnt] = v if v == v else -np.inf
            buf_c[cnt] = j
            cnt += 1
            if cnt == buf_v.size:
                _compact(buf_v, buf_c, cnt, k)
                cnt = k
    if cnt > k:
        _compact(buf_v, buf_c, cnt, k)
    for j in range(k):
        vals[j] = buf_v[j]
        cols[j] = buf_c[j]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def select_rows(scores, k, vals, cols):
    """Row by row :func:`_select_row`: ``scores`` (n, m) float32 C-contiguous, ``k`` <= m;
    results into ``vals`` (n, k) float32 and ``cols`` (n, k) int64."""
    n = scores.shape[0]
    sample = np.empty(_SEGMENTS * _SEG, np.float32)
    size = max(4 * k, 2048) + _CHUNK
    buf_v = np.empty(size, np.float32)
    buf_c = np.empty(size, np.int64)
    for i in range(n):
        _select_row(scores[i], k, vals[i], cols[i], sample, buf_v, buf_c)


# --- the same selection over column tiles, scored tile by tile (topk.tiled_top) ---------------


@numba.njit(cache=True, nogil=True, error_model="numpy")
def sample_thresholds(sample, sample_cols, k, m, ex_indptr, ex_idx, t):
    """Each row's starting threshold ``t``: the q-th largest of its sampled scores (columns
    ``sample_cols``, ascending; excluded ones count as -inf), ~2k of the row's ``m`` entries
    expected at or above it."""
    n, n_s = sample.shape
    tmp = np.empty(n_s, np.float32)
    q = min(n_s, max(16, (2 * k * n_s) // m))
    for i in range(n):
        p, pe = ex_indptr[i], ex_indptr[i + 1]
        for j in range(n_s):
            col = sample_cols[j]
            while p < pe and ex_idx[p] < col:
                p += 1
            v = sample[i, j]
            tmp[j] = -np.inf if (p < pe and ex_idx[p] == col) or v != v else v
        t[i] = np.partition(tmp, n_s - q)[n_s - q]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def scan_tile(tile, c0, k, t, cnt, buf_v, buf_c, ex_ptr, ex_indptr, ex_idx):
    """Buffer row ``i``'s entries >= ``t[i]`` of the tile (catalogue columns ``c0`` on) that
    are not excluded, column order kept; a full buffer is cut back to its top ``k`` and
    ``t[i]`` raised to its k-th value. ``cnt``, ``t`` and ``ex_ptr`` carry over tiles."""
    n, w = tile.shape
    size = buf_v.shape[1]
    n_full = w // _CHUNK
    for i in range(n):
        row = tile[i]
        ti, c, p, pe = t[i], cnt[i], ex_ptr[i], ex_indptr[i + 1]
        bv, bc = buf_v[i], buf_c[i]
        for ch in range(n_full + 1):
            start = ch * _CHUNK
            stop = w if ch == n_full else start + _CHUNK
            if ch < n_full:
                hits = 0
                for j in range(start, start + _CHUNK):  # a fixed trip count: vectorised
                    hits += row[j] >= ti
                if hits == 0:
                    continue
            for j in range(start, stop):
                v = row[j]
                if v >= ti:
                    col = c0 + j
                    while p < pe and ex_idx[p] < col:
                        p += 1
                    if p < pe and ex_idx[p] == col:
                        continue
                    if c == size:
                        ti = _compact(bv, bc, c, k)
                        c = k
                        if not v >= ti:
                            continue
                    bv[c] = v
                    bc[c] = col
                    c += 1
        t[i], cnt[i], ex_ptr[i] = ti, c, p


@numba.njit(cache=True, nogil=True, error_model="numpy")
def finish_rows(k, cnt, buf_v, buf_c, vals, cols, failed):
    """Each row's top ``k`` from its buffer; ``failed`` where fewer than ``k`` were kept."""
    for i in range(cnt.size):
        c = cnt[i]
        if c < k:
            failed[i] = True
            continue
        if c > k:
            _compact(buf_v[i], buf_c[i], c, k)
        for j in range(k):
            vals[i, j] = buf_v[i, j]
            cols[i, j] = buf_c[i, j]
