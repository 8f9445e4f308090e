"""Re-weighting of the user×item matrix (BM25 / TF-IDF), shared by ALS and ItemKNN.

Its own module so that neither model imports the other.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

WEIGHTINGS = ("none", "bm25", "tfidf")


def weight_interactions(
    user_item: sp.csr_matrix, weighting: str, bm25_k1: float = 100.0, bm25_b: float = 0.8
) -> sp.csr_matrix:
    """Re-weight a user×item matrix the way ``implicit``'s examples do (per item, over users)."""
    from implicit.nearest_neighbours import bm25_weight, tfidf_weight

    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if weighting == "none":
        return user_item
    item_user = user_item.T.tocsr()
    if weighting == "bm25":
        weighted = bm25_weight(item_user, K1=bm25_k1, B=bm25_b)
    else:
        weighted = tfidf_weight(item_user)
    out = weighted.T.tocsr().astype(np.float32)
    out.sort_indices()
    return out
