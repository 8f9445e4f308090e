"""The top-k selections of models/topk.py: the numba kernel against a full stable sort."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_assets.core.models import topk


def reference(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` by (score desc, column asc), NaN as -inf: a full stable sort."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    cols = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return cols, np.take_along_axis(s, cols, axis=1)


def blocks() -> list[np.ndarray]:
    """Rows of the shapes the models rank, with ties, excluded (-inf) entries and NaN."""
    rng = np.random.default_rng(3)
    wide = rng.standard_normal((12, 40_000)).astype(np.float32)
    wide[0] = 1.0  # every entry tied
    wide[1, ::3] = -np.inf  # excluded columns
    wide[2, 100:] = -np.inf  # fewer live entries than some k
    wide[3] = np.round(wide[3], 1)  # many ties around any k-th value
    wide[4, rng.integers(0, 40_000, 500)] = np.nan
    wide[5, 5_000:] = np.nan  # NaN where the threshold is sampled
    wide[6] = np.sort(wide[6])  # ascending: the running threshold keeps rising
    wide[7] = np.sort(wide[7])[::-1]  # descending
    wide[8, -1_000:] += 10  # the best entries all at the end
    small = rng.integers(0, 5, (9, 300)).astype(np.float32)  # the test models' catalogues
    return [wide, small, rng.standard_normal((3, 70)).astype(np.float32)]


@pytest.mark.parametrize("k", [1, 7, 101, 1000, 4000])
def test_numba_selection_keeps_the_lowest_columns_among_ties(k):
    if topk._kernels() is False:
        pytest.skip("numba not importable")
    for scores in blocks():
        kk = min(k, scores.shape[1])
        vals, cols = topk.top_unordered(scores.copy(), kk)
        want_cols, want_vals = reference(scores, kk)
        order = np.lexsort((cols, -np.where(np.isnan(vals), -np.inf, vals)), axis=-1)
        got_cols = np.take_along_axis(cols, order, axis=1)
        np.testing.assert_array_equal(got_cols, want_cols)
        np.testing.assert_array_equal(np.take_along_axis(vals, order, axis=1), want_vals)


@pytest.mark.parametrize("use_numba", [True, False])
@pytest.mark.parametrize("width", [1, 20, 100, 299, 300])
def test_topk_dense_is_a_stable_sort(monkeypatch, use_numba, width):
    monkeypatch.setattr(topk, "ENABLED", use_numba)
    for scores in blocks():
        w = min(width, scores.shape[1])
        cols, vals = topk.topk_dense(scores.copy(), w)
        want_cols, want_vals = reference(scores, w)
        dead = ~(want_vals > topk.EXCLUDED)
        np.testing.assert_array_equal(cols, np.where(dead, -1, want_cols))
        np.testing.assert_array_equal(vals, np.where(dead, -np.inf, want_vals))


def test_torch_fallback_selects_the_same_values(monkeypatch):
    monkeypatch.setattr(topk, "ENABLED", False)
    scores = blocks()[0][6:]  # NaN-free rows
    vals, cols = topk.top_unordered(scores.copy(), 500)
    np.testing.assert_array_equal(np.take_along_axis(scores, cols, axis=1), vals)
    np.testing.assert_array_equal(np.sort(vals, 1), np.sort(reference(scores, 500)[1], 1))


@pytest.mark.parametrize("tile", [7, 2048])
def test_tiled_selection_equals_topk_dense_on_the_masked_block(tile):
    """Scores made a tile at a time, excluded entries skipped: the lists of topk_dense on the
    whole block with those entries at -inf (rows that run out, all-NaN tails, ties)."""
    if not topk.tiled_available():
        pytest.skip("numba not importable")
    sp = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(5)
    for n, m, k in ((12, 40_000, 101), (12, 9_000, 1000), (9, 300, 20)):
        scores = blocks()[0][:n, :m].copy() if m == 40_000 else None
        if scores is None:
            scores = rng.standard_normal((n, m)).astype(np.float32)
            scores[0] = 1.0
            scores[1, 5:] = np.nan
            scores[2] = np.round(scores[2], 1)
        exclude = sp.random(n, m, density=0.05, format="lil", random_state=1, dtype=np.float32)
        exclude[3, : m - 3] = 1.0  # fewer than k entries left
        exclude = exclude.tocsr()
        exclude.sort_indices()

        def score_into(c0, c1, out, scores=scores):
            out[:] = scores[:, c0:c1]

        masked = scores.copy()
        masked[np.repeat(np.arange(n), np.diff(exclude.indptr)), exclude.indices] = -np.inf
        for ex, block in ((exclude, masked), (None, scores)):
            got = topk.tiled_topk_dense(n, m, k, score_into, ex, tile=tile)
            want = topk.topk_dense(block.copy(), k)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
