"""The search bound of association-rule mining, decided before mlxtend runs.

mlxtend's cost explodes on dense baskets (sessions with tens to hundreds of carted items):
2,000 items that all reach ``min_support`` make 2 million candidate pairs and up to 1.3 billion
candidate triples. So the mining is bounded, for every input, by three rules in this order:

1. **Itemsets have at most ``max_len`` items** (default 3).
2. **Large baskets are capped**: a basket with more than ``max_basket_items`` items keeps its
   ``max_basket_items`` most frequent ones (counted over all baskets, ties to the smaller item
   id) and drops the rest. The basket stays in the population, so supports keep their
   denominator; the dropped entries are the rarest items of the basket, the ones least likely
   to reach ``min_support`` anyway. This bounds the pair co-occurrence work (at most
   ``max_basket_items²`` per basket) and the length of every FP-tree path.
3. **``min_support`` is raised until the work is bounded**. For an integer support count ``t``
   only the items reaching ``t`` can be in a frequent itemset; the smallest ``t >=`` the
   requested count is chosen for which all three of these, computed (not sampled) from item
   supports and the sparse pair co-occurrence matrix ``XᵀX`` of the basket × item one-hot, fit:

   - **candidates ≤ ``max_candidates``**: the itemsets Apriori tests, which include every
     frequent itemset FP-Growth finds. With ``F1`` items reaching ``t``: ``F1`` singletons,
     ``F1·(F1−1)/2`` pairs (Apriori tests every pair of frequent items), the triangles of the
     graph of frequent pairs (exactly Apriori's triples after its subset pruning) and, for
     ``max_len ≥ 4``, ``Σ_v C(d⁺_v, k−1)`` ``k``-itemsets, ``d⁺_v`` the out-degree of item ``v``
     when each frequent pair points from its lower- to its higher-degree item;
   - **candidate checks ≤ ``max_candidate_checks``**: the basket × candidate cells Apriori's
     low-memory path touches: one mask over all baskets per prefix (frequent items and pairs),
     then, per candidate, the baskets that hold its prefix (``CandidateCounter._checks``);
   - **basket subsets ≤ ``max_basket_subsets``**: ``Σ_b C(m_b, max_len + 1)``, ``m_b`` the items
     of basket ``b`` reaching ``t``. mlxtend's FP-Growth builds a conditional tree for every
     frequent itemset up to ``max_len`` (one level past what it reports), and those trees hold
     at most one path per such subset of a basket: this is its work in the worst case, where
     no two baskets share a prefix.

   Every quantity only falls as ``t`` rises, so each has a smallest fitting ``t`` found by
   bisection over the values where it changes (item counts, then pair counts), and the
   effective count is the largest of them.

What was done is returned as a ``SearchBound`` (requested and effective ``min_support``,
baskets capped, entries and items dropped, the estimates before and after) for the asset's
metadata.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.special import comb

# Defaults sized so that Apriori and FP-Growth each finish in seconds on two shared cores
# (benchmarks/bench_rules.py); ordinary transaction baskets are far below all of them.
DEFAULT_MAX_LEN = 3
DEFAULT_MAX_BASKET_ITEMS = 30
DEFAULT_MAX_CANDIDATES = 100_000
DEFAULT_MAX_CANDIDATE_CHECKS = 50_000_000
DEFAULT_MAX_BASKET_SUBSETS = 4_000_000


@dataclass(frozen=True)
class SearchBound:
    """What bounding did to one basket table; ``as_metadata`` is attached to the asset."""

    max_len: int
    max_basket_items: int
    max_candidates: int
    max_candidate_checks: int
    max_basket_subsets: int
    n_baskets: int  # the support denominator
    baskets_capped: int  # baskets that held more than max_basket_items items
    basket_items_dropped: int  # (basket, item) entries those baskets lost
    min_support_requested: float
    min_support_effective: float  # min_count_effective / n_baskets
    min_count_requested: int  # support counts: a basket count an itemset must reach
    min_count_effective: int
    items_considered: int  # item columns after min_item_count / max_items / the basket cap
    items_frequent_requested: int  # items reaching the requested support
    items_frequent: int  # items reaching the effective support: mlxtend's columns
    candidate_pairs_requested: int  # Apriori's candidate pairs at the requested support
    basket_subsets_requested: int
    candidates: int  # candidate itemsets at the effective support (<= max_candidates)
    candidate_pairs: int
    frequent_pairs: int
    candidate_triples: int  # 0 when max_len < 3
    candidate_checks: int
    basket_subsets: int

    @property
    def raised(self) -> bool:
        return self.min_count_effective > self.min_count_requested

    def as_metadata(self) -> dict[str, int | float | bool]:
        return {**asdict(self), "min_support_raised": self.raised}


def validate_bound(
    max_len: int,
    max_basket_items: int,
    max_candidates: int,
    max_candidate_checks: int,
    max_basket_subsets: int,
) -> None:
    """Raise ``ValueError`` naming the first setting that makes no bound."""
    if max_len < 2:
        raise ValueError(f"max_len: expected >= 2 (a rule needs two items), got {max_len}")
    if max_basket_items < 2:
        raise ValueError(f"max_basket_items: expected >= 2, got {max_basket_items}")
    if max_candidates < 3:
        raise ValueError(
            f"max_candidates: expected >= 3 (two items and their pair), got {max_candidates}"
        )
    for name, value in (
        ("max_candidate_checks", max_candidate_checks),
        ("max_basket_subsets", max_basket_subsets),
    ):
        if value < 1:
            raise ValueError(f"{name}: expected >= 1, got {value}")


def cap_baskets(pairs: pl.DataFrame, max_basket_items: int) -> tuple[pl.DataFrame, int, int]:
    """Rule 2: each basket keeps at most its ``max_basket_items`` most frequent items.

    ``pairs`` holds distinct (basket_id, item_id) rows. Returns the kept rows, the number of
    baskets that were capped and the number of rows dropped.
    """
    sizes = pairs.group_by("basket_id").agg(n=pl.len())
    capped = int((sizes.get_column("n") > max_basket_items).sum())
    if capped == 0:
        return pairs, 0, 0
    kept = (
        pairs.with_columns(count=pl.len().over("item_id"))
        .sort(["basket_id", "count", "item_id"], descending=[False, True, False])
        .filter(pl.int_range(pl.len()).over("basket_id") < max_basket_items)
        .drop("count")
    )
    return kept, capped, pairs.height - kept.height


def _pairs(n_items: int) -> int:
    return n_items * (n_items - 1) // 2


def _max_items_within(cap: int) -> int:
    """The largest F with F + F(F-1)/2 <= cap (items plus Apriori's candidate pairs)."""
    f = int((math.isqrt(8 * cap + 1) - 1) // 2)  # F(F+1)/2 <= cap
    while f + _pairs(f) > cap:
        f -= 1
    while f + 1 + _pairs(f + 1) <= cap:
        f += 1
    return f


class CandidateCounter:
    """Candidate itemset counts at support counts ``t >= floor`` of one basket matrix.

    Only items reaching ``floor`` take part in any itemset at such ``t``, so the co-occurrence
    product is computed over those columns alone.
    """

    def __init__(self, matrix: sp.csr_matrix, max_len: int, floor: int):
        self.max_len = max_len
        self.n_baskets = matrix.shape[0]
        counts = np.asarray(matrix.sum(axis=0)).ravel().astype(np.int64)
        self.columns = np.flatnonzero(counts >= floor)
        ones = matrix[:, self.columns].astype(np.int32)
        self.item_counts = counts[self.columns]
        self.n_items = self.columns.size
        # Pair co-occurrence XᵀX, upper triangle: one (i, j, count) per pair seen together.
        upper = sp.triu(ones.T.tocsr() @ ones, k=1).tocoo()
        self.pair_i = upper.row.astype(np.int64)
        self.pair_j = upper.col.astype(np.int64)
        self.pair_counts = upper.data.astype(np.int64)

    def counts(self, t: int) -> dict[str, int]:
        """Candidate counts by kind at support count ``t`` (module docstring, rule 3)."""
        f1 = int((self.item_counts >= t).sum())
        frequent = self.pair_counts >= t
        out = {
            "items": f1,
            "candidate_pairs": _pairs(f1),
            "frequent_pairs": int(frequent.sum()),
            "candidate_triples": 0,
            "larger": 0,
        }
        if self.max_len >= 3 and out["frequent_pairs"] >= 3:
            out["candidate_triples"], out["larger"] = self._cliques(
                self.pair_i[frequent], self.pair_j[frequent]
            )
        out["total"] = f1 + out["candidate_pairs"] + out["candidate_triples"] + out["larger"]
        out["checks"] = self._checks(t, f1, frequent, out["larger"])
        return out

    def _checks(self, t: int, f1: int, frequent: np.ndarray, larger: int) -> int:
        """Apriori's work: basket × candidate cells its low-memory path really touches.

        Per prefix it reads one mask over all baskets, then the candidate columns of the
        baskets holding the prefix. Candidates extend a prefix by a later column, so the
        ``r``-th frequent item prefixes ``f1 − 1 − r`` pairs and a frequent pair ``(a, b)``
        the triples of its common later partners.
        """
        n_prefixes = f1 + int(frequent.sum())
        heads = self.item_counts[self.item_counts >= t]  # in column order
        checks = self.n_baskets * (n_prefixes + larger)
        checks += int((heads * (f1 - 1 - np.arange(f1))).sum())
        if self.max_len >= 3 and frequent.any():
            i, j = self.pair_i[frequent], self.pair_j[frequent]
            shape = (self.n_items, self.n_items)
            later = sp.csr_matrix((np.ones(i.size, dtype=np.int64), (i, j)), shape=shape)
            weights = sp.csr_matrix((self.pair_counts[frequent], (i, j)), shape=shape)
            checks += int((later @ later.T).multiply(weights).sum())
        return checks

    def _cliques(self, i: np.ndarray, j: np.ndarray) -> tuple[int, int]:
        """Triangles of the pair graph (exact) and the bound on larger cliques."""
        n = self.n_items
        degree = np.bincount(i, minlength=n) + np.bincount(j, minlength=n)
        # Orient every edge from the lower- to the higher-degree end (ties by index): each
        # clique is then counted once, from its first item, and out-degrees stay <= sqrt(2E).
        rank = np.empty(n, dtype=np.int64)
        rank[np.lexsort((np.arange(n), degree))] = np.arange(n)
        forward = rank[i] < rank[j]
        src, dst = np.where(forward, i, j), np.where(forward, j, i)
        oriented = sp.csr_matrix((np.ones(src.size, dtype=np.int64), (src, dst)), shape=(n, n))
        # (U·U)[a, c] counts the paths a→b→c; those closed by a→c are the triangles.
        triangles = int((oriented @ oriented).multiply(oriented).sum())
        out_degree = np.bincount(src, minlength=n)
        larger = sum(
            int(sum(math.comb(int(d), k - 1) for d in out_degree[out_degree >= k - 1]))
            for k in range(4, self.max_len + 1)
        )
        return triangles, larger


@dataclass(frozen=True)
class SupportBound:
    min_count: int  # the effective support count
    columns: np.ndarray  # matrix columns whose items reach it
    counts: dict[str, int]  # CandidateCounter.counts at min_count
    basket_subsets: int
    items_frequent_requested: int
    candidate_pairs_requested: int
    basket_subsets_requested: int


def _smallest_fitting(steps: np.ndarray, fits) -> int:
    """The first of the ascending ``steps`` where ``fits`` holds; it must hold at the last."""
    lo, hi = 0, steps.size - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(int(steps[mid])):
            hi = mid
        else:
            lo = mid + 1
    return int(steps[hi])


def basket_subsets(matrix: sp.csr_matrix, item_counts: np.ndarray, t: int, size: int) -> int:
    """``Σ_b C(m_b, size)``, ``m_b`` the items of basket ``b`` whose count reaches ``t``."""
    per_basket = matrix @ (item_counts >= t).astype(np.float64)
    # float64 is exact far beyond any budget and cannot overflow like int64 would
    return int(round(float(comb(per_basket, size).sum())))


def _depth(counts: dict[str, int], max_len: int) -> int:
    """The largest itemset size with a candidate: FP-Growth builds trees one level past it."""
    if counts["candidate_triples"] or counts["larger"]:
        return max_len if counts["larger"] else 3
    return 2 if counts["frequent_pairs"] else 1


def bound_support(
    matrix: sp.csr_matrix,
    *,
    min_count: int,
    max_len: int,
    max_candidates: int,
    max_candidate_checks: int,
    max_basket_subsets: int,
) -> SupportBound:
    """Rule 3: the smallest support count ``>= min_count`` at which every estimate fits."""
    item_counts = np.asarray(matrix.sum(axis=0)).ravel().astype(np.int64)
    f1 = int((item_counts >= min_count).sum())
    ceiling = int(item_counts.max(initial=min_count)) + 1  # no item reaches it: all fits
    item_steps = np.unique(
        np.concatenate([[min_count], item_counts[item_counts > min_count], [ceiling]])
    )

    def subsets(t: int, size: int) -> int:
        return basket_subsets(matrix, item_counts, t, size)

    # Cuts that depend on item counts alone come first, so that the co-occurrence product
    # covers few items: the level-1 conditional trees (pairs of each basket) must fit, ...
    floor = _smallest_fitting(item_steps, lambda t: subsets(t, 2) <= max_basket_subsets)
    # ... and so must singletons plus Apriori's pairs.
    cap = max_candidates
    f_max = _max_items_within(cap)
    if int((item_counts >= floor).sum()) > f_max:
        floor = int(np.sort(item_counts)[::-1][f_max]) + 1
    counter = CandidateCounter(matrix, max_len, floor)

    def estimates(t: int) -> tuple[dict[str, int], int]:
        counts = counter.counts(t)
        return counts, subsets(t, _depth(counts, max_len) + 1)

    def fits(t: int) -> bool:
        counts, work = estimates(t)
        return (
            counts["total"] <= cap
            and counts["checks"] <= max_candidate_checks
            and work <= max_basket_subsets
        )

    effective = floor
    if not fits(floor):
        # Above the floor the estimates change only where an item or a pair count is crossed.
        # One above the largest item count nothing is frequent: that always fits.
        top = int(counter.item_counts.max(initial=floor)) + 1
        steps = np.unique(np.concatenate([counter.item_counts, counter.pair_counts, [top]]))
        effective = _smallest_fitting(steps[(steps > floor) & (steps <= top)], fits)
    counts, work = estimates(effective)
    return SupportBound(
        min_count=effective,
        columns=np.flatnonzero(item_counts >= effective),
        counts=counts,
        basket_subsets=work,
        items_frequent_requested=f1,
        candidate_pairs_requested=_pairs(f1),
        basket_subsets_requested=subsets(min_count, max_len + 1),
    )
