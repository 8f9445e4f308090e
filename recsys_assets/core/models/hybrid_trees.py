"""A fitted HistGradientBoosting ensemble as plain numpy arrays, and a vectorised predictor.

Model bytes hold no pickle, so the Hybrid's re-ranker cannot be stored as a scikit-learn object.
Each of its trees (``model._predictors``: one node record array per tree) is padded to a
*complete* binary tree of one depth D: internal node ``p`` has children ``2p+1`` and ``2p+2``,
and a leaf that sits above depth D becomes a chain of always-left nodes ending in its value. The
walk then needs no child pointers: ``p = 2p + 1 + go_right`` for D steps, over every row and
every tree at once, a few array passes per level.

It reproduces scikit-learn exactly (``tests/test_hybrid.py`` checks equality): a numerical
node sends a row right when ``x > threshold``, a missing value (NaN) goes where the node's
``missing_go_to_left`` says, values are compared in float64 as scikit-learn does, and the sum
runs baseline first, then tree by tree in order (a cumulative sum, so even the rounding agrees).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Rows per chunk of the walk: rows × trees int32 indices stay a few MB, cache-sized passes.
_CHUNK_ELEMENTS = 1 << 19


@dataclass
class TreeEnsemble:
    """``n_trees`` complete trees of depth ``depth``; raw score = baseline + Σ leaf values."""

    feature: np.ndarray  # (n_trees, 2**depth - 1) int32, feature tested at each internal node
    threshold: np.ndarray  # (n_trees, 2**depth - 1) float64, go right when x > threshold
    missing_right: np.ndarray  # (n_trees, 2**depth - 1) bool, where NaN goes
    leaf_value: np.ndarray  # (n_trees, 2**depth) float64
    baseline: float
    n_features: int

    @property
    def n_trees(self) -> int:
        return int(self.feature.shape[0])

    @property
    def depth(self) -> int:
        return int(np.log2(self.leaf_value.shape[1])) if self.leaf_value.size else 0

    def predict_raw(self, X: np.ndarray) -> np.ndarray:
        """Raw scores (log-odds for a binary classifier), float64, one per row of ``X``."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(
                f"re-ranker features: expected shape (n, {self.n_features}), got {X.shape}"
            )
        n = X.shape[0]
        out = np.full(n, self.baseline, dtype=np.float64)
        if n == 0 or self.n_trees == 0:
            return out
        X = np.ascontiguousarray(X)
        has_nan = bool(np.isnan(X).any()) if X.dtype.kind == "f" else False
        n_internal = self.feature.shape[1]
        feature = self.feature.ravel()
        threshold = self.threshold.ravel()
        missing_right = self.missing_right.ravel()
        leaf_value = self.leaf_value.ravel()
        tree_internal = (np.arange(self.n_trees, dtype=np.int64) * n_internal)[None, :]
        tree_leaf = (np.arange(self.n_trees, dtype=np.int64) * (n_internal + 1))[None, :]
        step = max(1, _CHUNK_ELEMENTS // self.n_trees)
        for start in range(0, n, step):
            chunk = X[start : start + step]
            m = chunk.shape[0]
            flat = chunk.ravel()
            row_base = (np.arange(m, dtype=np.int64) * self.n_features)[:, None]
            node = np.zeros((m, self.n_trees), dtype=np.int64)
            for _ in range(self.depth):
                g = node + tree_internal
                x = flat[row_base + feature[g]]
                right = x > threshold[g]
                if has_nan:
                    right |= np.isnan(x) & missing_right[g]
                node = 2 * node + 1 + right
            values = leaf_value[node - n_internal + tree_leaf]
            # baseline first, then the trees in order: the same float64 additions as sklearn
            summed = np.cumsum(np.concatenate([out[start : start + m, None], values], axis=1), 1)
            out[start : start + m] = summed[:, -1]
        return out

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}_feature": self.feature,
            f"{prefix}_threshold": self.threshold,
            f"{prefix}_missing_right": self.missing_right,
            f"{prefix}_leaf_value": self.leaf_value,
            f"{prefix}_scalars": np.array([self.baseline, self.n_features], dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, prefix: str, arrays: dict[str, np.ndarray]) -> TreeEnsemble:
        baseline, n_features = arrays[f"{prefix}_scalars"]
        return cls(
            feature=arrays[f"{prefix}_feature"],
            threshold=arrays[f"{prefix}_threshold"],
            missing_right=arrays[f"{prefix}_missing_right"],
            leaf_value=arrays[f"{prefix}_leaf_value"],
            baseline=float(baseline),
            n_features=int(n_features),
        )


def ensemble_from_sklearn(model) -> TreeEnsemble:
    """Export a fitted binary ``HistGradientBoostingClassifier`` or a ``…Regressor``.

    Categorical splits are not supported (the Hybrid's features are all numerical).
    """
    predictors = model._predictors  # one list per boosting iteration, one tree per class
    if any(len(per_iter) != 1 for per_iter in predictors):
        raise ValueError("only single-output ensembles (binary or regression) can be exported")
    baseline = float(np.asarray(model._baseline_prediction).ravel()[0])
    n_features = int(model.n_features_in_)
    trees = [per_iter[0].nodes for per_iter in predictors]
    if any(bool(nodes["is_categorical"].any()) for nodes in trees):
        raise ValueError("categorical splits are not supported by the numpy tree walker")
    depth = max((int(nodes["depth"].max()) for nodes in trees), default=0)
    n_internal = 2**depth - 1
    feature = np.zeros((len(trees), n_internal), dtype=np.int32)
    threshold = np.full((len(trees), n_internal), np.inf, dtype=np.float64)
    missing_right = np.zeros((len(trees), n_internal), dtype=bool)
    leaf_value = np.zeros((len(trees), n_internal + 1), dtype=np.float64)
    for t, nodes in enumerate(trees):  # a Python walk over tree nodes (≤ 2**depth each)
        _place(nodes, 0, 0, 0, depth, feature[t], threshold[t], missing_right[t], leaf_value[t])
    return TreeEnsemble(feature, threshold, missing_right, leaf_value, baseline, n_features)


def _place(nodes, node, pos, level, depth, feature, threshold, missing_right, leaf_value):
    """Copy sklearn node ``node`` to complete-tree position ``pos`` at ``level`` (recursive)."""
    rec = nodes[node]
    if rec["is_leaf"]:
        # padded internal nodes keep threshold +inf (always left); every leaf below gets the value
        span = 2 ** (depth - level)
        first = (pos + 1) * span - 1 - (2**depth - 1)
        leaf_value[first : first + span] = rec["value"]
        return
    feature[pos] = rec["feature_idx"]
    threshold[pos] = rec["num_threshold"]
    missing_right[pos] = not rec["missing_go_to_left"]
    args = (depth, feature, threshold, missing_right, leaf_value)
    _place(nodes, int(rec["left"]), 2 * pos + 1, level + 1, *args)
    _place(nodes, int(rec["right"]), 2 * pos + 2, level + 1, *args)
