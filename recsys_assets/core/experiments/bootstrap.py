"""Bootstrap of column means over users, all columns from the same resamples (paired).

A resample draws ``n`` user indices with replacement; its mean of column ``j`` is
``counts · values[:, j] / n`` where ``counts`` holds how often each user was drawn. The indices
are drawn as one ``(chunk × n)`` integer matrix per chunk of resamples; each row becomes counts
with one ``bincount`` (a row's counts, 4 bytes × n, stay in cache, where one ``bincount`` over the
whole chunk scatters into ~64 MB and measured 2-10x slower on the shared 2 cores), and a single
``(chunk × n) @ (n × m)`` product gives every column's resampled mean. No loop over users; the
loop over a chunk's rows is a vectorised ``bincount`` each. Because every column (every model
and metric) is resampled with the same users, differences and ratios between columns are
*paired* bootstrap statistics.

The product runs in float32 (measured 1.4-2x faster than float64 here). Counts are small
integers and 0/1 outcomes are exact in float32, so their resampled sums are exact (below 2^24
users) and a resample without a single buyer gives exactly 0; other columns (NDCG, revenue) are
non-negative, so float32 accumulation costs ~1e-6 relative error, far below the bootstrap's own
spread. (Centring the columns first was tried: it turned those exact zeros into ±1e-6 noise.)
"""

from __future__ import annotations

import warnings

import numpy as np

# Index-matrix elements per chunk: ~32 MB of int32 indices plus as much for the float32 counts.
_CHUNK_ELEMENTS = 1 << 23


def bootstrap_means(
    values: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    chunk_elements: int = _CHUNK_ELEMENTS,
) -> np.ndarray:
    """``(n_resamples × m)`` resampled means of the columns of ``values`` (``n × m`` or ``n``)."""
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[:, None]
    if matrix.ndim != 2:
        raise ValueError(f"values must be 1-D or 2-D, got shape {matrix.shape}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    n, m = matrix.shape
    out = np.full((n_resamples, m), np.nan)
    if n == 0:
        return out
    if n >= np.iinfo(np.int32).max:
        raise ValueError(f"at most {np.iinfo(np.int32).max - 1} users, got {n}")
    rng = np.random.default_rng(seed)
    single = np.ascontiguousarray(matrix, dtype=np.float32)
    chunk = int(max(1, min(n_resamples, chunk_elements // n)))
    counts = np.empty((chunk, n), dtype=np.float32)
    for start in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(rows, n), dtype=np.int32)
        for r in range(rows):
            counts[r] = np.bincount(idx[r], minlength=n)
        out[start : start + rows] = (counts[:rows] @ single).astype(np.float64) / n
    return out


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval along axis 0 (NaN resamples ignored: e.g. a lift over a zero mean)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = (1 - level) / 2 * 100
    samples = np.asarray(samples, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low = np.nanpercentile(samples, tail, axis=0)
        high = np.nanpercentile(samples, 100 - tail, axis=0)
    return low, high


def ratio_lift(control_means: np.ndarray, treatment_means: np.ndarray) -> np.ndarray:
    """Relative lift per resample, NaN where the control mean is 0."""
    control_means = np.asarray(control_means, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        lift = np.asarray(treatment_means) / control_means - 1.0
    return np.where(control_means == 0, np.nan, lift)
