"""Synthetic catalogue: the category forest and the items (popularity, taste factors, prices).

Part of the synthetic generator (see :mod:`recsys_assets.core.generator`). Everything is drawn
from the ``numpy.random.Generator`` handed in, so a seed fixes the whole catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recsys_assets.core.data.schemas import CATEGORY_TREE_FILE

# Share of non-root categories at depth 1, 2, 3, 4: a few broad departments, most categories two
# or three levels down, as in the real tree (25 roots, 1,669 categories).
_DEPTH_SHARES = np.array([0.12, 0.40, 0.35, 0.13])


@dataclass(frozen=True)
class CategoryForest:
    """Categories by index ``0..C-1``; roots first, then depth by depth."""

    ids: np.ndarray  # (C,) category id written to the files
    parent: np.ndarray  # (C,) parent index, -1 for roots
    depth: np.ndarray  # (C,) 0 for roots
    root: np.ndarray  # (C,) index of the root
    is_leaf: np.ndarray  # (C,) bool

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def n_roots(self) -> int:
        return int((self.parent < 0).sum())


def build_category_forest(
    rng: np.random.Generator, n_categories: int, n_roots: int
) -> CategoryForest:
    """A forest of ``n_roots`` trees, ``n_categories`` nodes in all, depth up to 4 (at least 2)."""
    if n_categories < n_roots + 3:
        raise ValueError(
            f"n_categories: need at least n_roots + 3 = {n_roots + 3} for a depth-2 tree, "
            f"got {n_categories}"
        )
    rest = n_categories - n_roots
    per_depth = np.floor(_DEPTH_SHARES * rest).astype(np.int64)
    per_depth = np.maximum(per_depth, [1, 1, 0, 0])
    per_depth[1] += rest - per_depth.sum()  # rounding leftovers go to the widest level
    sizes = np.concatenate([[n_roots], per_depth])

    parent = np.full(n_categories, -1, dtype=np.int64)
    depth = np.zeros(n_categories, dtype=np.int64)
    root = np.arange(n_categories, dtype=np.int64)
    lo = 0
    for d in range(1, len(sizes)):
        prev_lo, prev_n = lo, sizes[d - 1]
        lo += prev_n
        n = sizes[d]
        if n == 0:
            continue
        # Every node of the level above gets a child while there are enough, then the rest pick
        # a parent at random: no department stays empty, widths still vary.
        picks = rng.integers(0, prev_n, size=n)
        k = min(n, prev_n)
        picks[:k] = rng.permutation(prev_n)[:k]
        idx = np.arange(lo, lo + n)
        parent[idx] = prev_lo + picks
        depth[idx] = d
        root[idx] = root[parent[idx]]
    is_leaf = np.ones(n_categories, dtype=bool)
    is_leaf[parent[parent >= 0]] = False
    # Real ids are a sparse-ish range (0..1698 for 1,669 categories) in no particular order.
    ids = rng.choice(int(n_categories * 1.02) + 2, size=n_categories, replace=False).astype(
        np.int64
    )
    return CategoryForest(ids=ids, parent=parent, depth=depth, root=root, is_leaf=is_leaf)


def write_category_tree(forest: CategoryForest, out_dir: Path) -> int:
    """``category_tree.csv``: ``categoryid,parentid`` sorted by id, empty parent for roots."""
    parent_ids = np.where(forest.parent >= 0, forest.ids[np.maximum(forest.parent, 0)], 0)
    df = (
        pl.DataFrame({"categoryid": forest.ids, "parentid": parent_ids, "p": forest.parent})
        .select("categoryid", parentid=pl.when(pl.col("p") >= 0).then(pl.col("parentid")))
        .sort("categoryid")
    )
    df.write_csv(out_dir / CATEGORY_TREE_FILE, line_terminator="\n")
    return df.height


@dataclass(frozen=True)
class BlockSampler:
    """Weighted draws confined to one block (a category, a root …) by inverse CDF.

    Only items with a positive weight can be drawn. ``draw`` costs one ``searchsorted`` per
    draw, so millions of draws are cheap.
    """

    order: np.ndarray  # item indices with weight > 0, grouped by block
    cum: np.ndarray  # cumulative weight along ``order``
    start: np.ndarray  # (B,) cumulative weight before each block
    total: np.ndarray  # (B,) weight inside each block
    first: np.ndarray  # (B,) first position of each block in ``order``
    size: np.ndarray  # (B,) number of drawable items in each block

    @classmethod
    def build(cls, block: np.ndarray, weight: np.ndarray, n_blocks: int) -> BlockSampler:
        keep = np.flatnonzero(weight > 0)
        order = keep[np.argsort(block[keep], kind="stable")]
        w = weight[order].astype(np.float64)
        cum = np.cumsum(w)
        size = np.bincount(block[order], minlength=n_blocks)
        first = np.concatenate([[0], np.cumsum(size)[:-1]])
        total = np.bincount(block[order], weights=w, minlength=n_blocks)
        start = np.concatenate([[0.0], np.cumsum(total)[:-1]])
        return cls(order=order, cum=cum, start=start, total=total, first=first, size=size)

    def draw_positions(self, blocks: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Positions in ``order`` for uniform numbers ``u`` (any shape broadcasting with blocks)."""
        target = self.start[blocks] + u * self.total[blocks]
        pos = np.searchsorted(self.cum, target, side="right")
        # Float round-off at a block edge must not leak into the neighbouring block.
        return np.clip(pos, self.first[blocks], self.first[blocks] + self.size[blocks] - 1)

    def draw(self, blocks: np.ndarray, u: np.ndarray) -> np.ndarray:
        return self.order[self.draw_positions(blocks, u)]

    def draw_other(self, blocks: np.ndarray, u: np.ndarray, avoid: np.ndarray) -> np.ndarray:
        """Like ``draw`` but never returns ``avoid`` when its block has another item."""
        pos = self.draw_positions(blocks, u)
        hit = self.order[pos] == avoid
        first, size = self.first[blocks], self.size[blocks]
        pos = np.where(hit, first + (pos - first + 1) % np.maximum(size, 1), pos)
        return self.order[pos]


@dataclass(frozen=True)
class ItemCatalog:
    """Items by index ``0..N-1``; ``weight`` is 0 for items that never get an event."""

    ids: np.ndarray  # (N,) item id written to the files
    category: np.ndarray  # (N,) category index
    root: np.ndarray  # (N,) root category index
    weight: np.ndarray  # (N,) popularity; Zipf-like over the active items
    factors: np.ndarray  # (N, d) float32 latent factors (category centroid + noise)
    log_price: np.ndarray  # (N,) log of the base price
    cartability: np.ndarray  # (N,) relative chance that a view turns into an add-to-cart

    @property
    def n(self) -> int:
        return len(self.ids)


def build_items(
    rng: np.random.Generator,
    forest: CategoryForest,
    n_items: int,
    n_active: int,
    *,
    zipf_exponent: float,
    zipf_offset: float,
    n_factors: int,
) -> ItemCatalog:
    """``n_items`` items, the first ``n_active`` of a random order carrying all the popularity."""
    n_cat = forest.n
    # Leaves hold most items; inner categories a few, as in the real catalogue.
    cat_weight = rng.lognormal(0.0, 1.0, n_cat) * np.where(forest.is_leaf, 1.0, 0.08)
    category = rng.choice(n_cat, size=n_items, p=cat_weight / cat_weight.sum())
    root = forest.root[category]

    # Popularity depends on the rank's *fraction* of the active set, so the shape of the
    # distribution (and the share of items that get any event) is the same at every scale.
    weight = np.zeros(n_items)
    active = rng.permutation(n_items)[:n_active]
    frac = (np.arange(n_active) + 0.5) / n_active
    weight[active] = (frac + zipf_offset) ** -zipf_exponent

    centroid = rng.normal(0.0, 1.0, (n_cat, n_factors))
    root_centroid = centroid[forest.root]
    factors = (
        0.55 * centroid[category]
        + 0.45 * root_centroid[category]
        + 0.6 * rng.normal(0.0, 1.0, (n_items, n_factors))
    ).astype(np.float32)

    # Prices: log-normal around a per-category level that itself varies around a per-root level.
    root_level = rng.normal(np.log(4000.0), 1.0, n_cat)[forest.root]
    cat_level = root_level + rng.normal(0.0, 0.4, n_cat)
    log_price = cat_level[category] + rng.normal(0.0, 0.5, n_items)
    # Cheaper-than-usual items for their category get carted more often.
    cartability = rng.lognormal(0.0, 0.7, n_items) * np.exp(
        -0.3 * (log_price - cat_level[category])
    )
    ids = rng.choice(int(n_items * 1.12) + 10, size=n_items, replace=False).astype(np.int64)
    return ItemCatalog(
        ids=ids,
        category=category,
        root=root,
        weight=weight,
        factors=factors,
        log_price=log_price,
        cartability=cartability,
    )


def build_next_items(
    rng: np.random.Generator, forest: CategoryForest, items: ItemCatalog, n_next: int
) -> np.ndarray:
    """The planted Markov chain: ``(N, n_next)`` item indices, -1 for items never viewed.

    Each active item's successors are other active items of its own category, drawn with a
    flattened popularity; in a category with fewer than four active items they come from its
    root instead, so that successors differ.
    """
    softened = items.weight**0.7
    by_cat = BlockSampler.build(items.category, softened, forest.n)
    by_root = BlockSampler.build(items.root, softened, forest.n)
    active = np.flatnonzero(items.weight > 0)
    cat = items.category[active]
    u = rng.random((len(active), n_next))
    own = np.broadcast_to(active[:, None], u.shape)
    from_cat = by_cat.draw_other(np.broadcast_to(cat[:, None], u.shape), u, own)
    from_root = by_root.draw_other(np.broadcast_to(items.root[active][:, None], u.shape), u, own)
    small = (by_cat.size[cat] < 4)[:, None]
    nxt = np.full((items.n, n_next), -1, dtype=np.int64)
    nxt[active] = np.where(small, from_root, from_cat)
    return nxt
