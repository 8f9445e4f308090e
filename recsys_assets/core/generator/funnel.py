"""Synthetic funnel: add-to-carts after views, transactions after add-to-carts, planted bundles.

Part of the synthetic generator (see :mod:`recsys_assets.core.generator`). The counts are hit
exactly: a given number of views become carts and a given number of carts are bought, chosen by
weighted sampling without replacement (Efraimidis–Spirakis keys ``log(u) / w``, top-k).

Planted here: **co-purchase bundles** — groups of 2–3 mid-popularity items of one root category
that some shoppers view, cart and buy together in one transaction. Mid-popularity on purpose:
items bought mostly inside their bundle give the bundle a high lift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys_assets.core.generator.catalog import BlockSampler, CategoryForest, ItemCatalog
from recsys_assets.core.generator.sessions import SEC_MS, Views, segment_cumsum

EVENT_VIEW, EVENT_CART, EVENT_TRANSACTION = 0, 1, 2


@dataclass(frozen=True)
class Bundles:
    members: np.ndarray  # (B, 3) item indices of each bundle, -1 padded
    weight: np.ndarray  # (B,) relative chance that a bundle purchase is this bundle

    def __len__(self) -> int:
        return len(self.members)

    @property
    def size(self) -> np.ndarray:
        return (self.members >= 0).sum(axis=1)

    def items_of(self, picks: np.ndarray) -> np.ndarray:
        """Members of the bundles ``picks``, concatenated in order."""
        rows = self.members[picks]
        return rows[rows >= 0]

    def as_lists(self) -> list[list[int]]:
        return [[int(x) for x in row if x >= 0] for row in self.members]


def build_bundles(
    rng: np.random.Generator, forest: CategoryForest, items: ItemCatalog, n_bundles: int
) -> Bundles:
    """``n_bundles`` disjoint groups of 2–3 active items sharing a root category."""
    active = np.flatnonzero(items.weight > 0)
    by_pop = active[np.argsort(-items.weight[active], kind="stable")]
    lo, hi = int(0.01 * len(by_pop)), max(int(0.20 * len(by_pop)), 3 * n_bundles + 10)
    band = by_pop[lo:hi]
    band_weight = np.zeros(items.n)
    band_weight[band] = 1.0
    sampler = BlockSampler.build(items.root, band_weight, forest.n)

    # Extra candidates: the ones that overlap an earlier bundle are skipped.
    anchors = rng.choice(band, size=min(2 * n_bundles + 5, len(band)), replace=False)
    roots = items.root[anchors]
    first = sampler.draw_other(roots, rng.random(len(anchors)), anchors)
    second = sampler.draw_other(roots, rng.random(len(anchors)), anchors)
    size3 = rng.random(len(anchors)) < 0.35
    members, used = [], set()
    for a, b, c, three in zip(anchors, first, second, size3, strict=True):  # a few hundred at most
        group = [int(a), int(b)] + ([int(c)] if three else [])
        group = list(dict.fromkeys(group))
        if len(group) < 2 or used.intersection(group):
            continue  # overlapping bundles would blur what "the" bundle of an item is
        used.update(group)
        members.append(group + [-1] * (3 - len(group)))
        if len(members) == n_bundles:
            break
    rank = rng.permutation(len(members))
    weight = (rank + 1.0) ** -0.3
    return Bundles(
        members=np.array(members, dtype=np.int64).reshape(-1, 3), weight=weight / weight.sum()
    )


@dataclass
class FunnelEvents:
    """Events added to the views: carts, transactions and the bundle shoppers' extra views."""

    session: np.ndarray
    item: np.ndarray
    ts: np.ndarray
    event: np.ndarray  # EVENT_VIEW / EVENT_CART / EVENT_TRANSACTION
    transaction: np.ndarray  # transaction index, -1 except on transactions
    n_transactions: int


def _top_k_weighted(rng: np.random.Generator, weight: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` draws without replacement ∝ ``weight`` (sorted)."""
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k > int((weight > 0).sum()):
        raise ValueError(f"asked for {k} weighted draws from {int((weight > 0).sum())} candidates")
    with np.errstate(divide="ignore"):
        key = np.log(rng.random(len(weight))) / weight
    return np.sort(np.argpartition(-key, k - 1)[:k])


def bundle_picks(rng: np.random.Generator, bundles: Bundles, n_purchases: int) -> np.ndarray:
    """Which bundle each of ``n_purchases`` bundle purchases is, in random order.

    Counts are allotted in proportion to the weights (only the remainder is random), so that at
    small scales every bundle is still bought often enough to be found.
    """
    if n_purchases == 0 or not len(bundles):
        return np.empty(0, dtype=np.int64)
    counts = np.floor(n_purchases * bundles.weight).astype(np.int64)
    rest = n_purchases - int(counts.sum())
    counts += np.bincount(
        rng.choice(len(bundles), size=rest, p=bundles.weight), minlength=len(bundles)
    )
    return rng.permutation(np.repeat(np.arange(len(bundles)), counts))


def generate_funnel(
    rng: np.random.Generator,
    views: Views,
    items: ItemCatalog,
    bundles: Bundles,
    picks: np.ndarray,
    *,
    n_carts: int,
    n_purchased: int,
) -> FunnelEvents:
    """``n_carts`` carts of viewed items and ``n_purchased`` bought carts, plus the bundle
    purchases ``picks`` (each: view, cart and buy every member, in one transaction)."""
    n_sessions = len(views.session_length)
    n_visitors = int(views.session_visitor.max()) + 1
    # A visitor's taste for buying is stable: repeat buyers exist, most never buy.
    buyer = rng.lognormal(0.0, 1.0, n_visitors)
    sess_buyer = buyer[views.session_visitor] * np.where(views.session_is_bot, 0.0, 1.0)

    # --- carts: only the first view of an item in a session may turn into a cart -----------
    key = views.session * np.int64(items.n) + views.item
    _, first_view = np.unique(key, return_index=True)
    w = np.zeros(len(views.item))
    s = views.session[first_view]
    w[first_view] = (
        items.cartability[views.item[first_view]]
        * sess_buyer[s]
        * views.session_length[s].astype(np.float64) ** 0.3
    )
    carted = _top_k_weighted(rng, w, n_carts)
    cart_session = views.session[carted]
    cart_item = views.item[carted]
    cart_ts = views.ts[carted] + rng.integers(5 * SEC_MS, 90 * SEC_MS, len(carted))

    # --- purchases: a session buys most of its cart or nothing ------------------------------
    with np.errstate(divide="ignore"):
        sess_key = np.log(rng.random(n_sessions)) / np.maximum(sess_buyer, 1e-12)
    cart_key = sess_key[cart_session] + 1e-9 * rng.random(len(carted))
    cart_key[rng.random(len(carted)) < 0.15] = -np.inf  # carts left behind in a buying session
    bought = (
        np.sort(np.argpartition(-cart_key, n_purchased - 1)[:n_purchased])
        if n_purchased
        else (np.empty(0, dtype=np.int64))
    )

    # --- bundle purchases: hosted by sessions of shoppers who buy ---------------------------
    host_w = np.where(views.session_is_bot, 0.0, sess_buyer)
    hosts = _top_k_weighted(rng, host_w, len(picks))
    hosts = hosts[rng.permutation(len(hosts))]
    sizes = bundles.size[picks]
    b_session = np.repeat(hosts, sizes)
    b_item = bundles.items_of(picks)
    last_view = np.full(n_sessions, np.iinfo(np.int64).min)
    np.maximum.at(last_view, views.session, views.ts)
    step = rng.integers(20 * SEC_MS, 120 * SEC_MS, len(b_item))
    offsets = np.cumsum(sizes) - sizes
    b_view_ts = last_view[b_session] + segment_cumsum(step, offsets, sizes)
    b_cart_ts = b_view_ts + rng.integers(5 * SEC_MS, 60 * SEC_MS, len(b_item))

    # --- transactions: one per buying session, after its last bought cart -------------------
    tx_session = np.concatenate([cart_session[bought], b_session])
    tx_item = np.concatenate([cart_item[bought], b_item])
    tx_cart_ts = np.concatenate([cart_ts[bought], b_cart_ts])
    buying, tx_index = np.unique(tx_session, return_inverse=True)
    ready = np.full(len(buying), np.iinfo(np.int64).min)
    np.maximum.at(ready, tx_index, tx_cart_ts)
    paid = ready + rng.integers(30 * SEC_MS, 6 * 60 * SEC_MS, len(buying))
    # Items of one order land at the same millisecond or a few seconds apart.
    jitter = np.where(rng.random(len(tx_item)) < 0.7, 0, rng.integers(1, 6, len(tx_item)) * SEC_MS)
    tx_ts = paid[tx_index] + jitter

    n_tx_rows, n_b = len(tx_item), len(b_item)
    return FunnelEvents(
        session=np.concatenate([cart_session, b_session, b_session, tx_session]),
        item=np.concatenate([cart_item, b_item, b_item, tx_item]),
        ts=np.concatenate([cart_ts, b_view_ts, b_cart_ts, tx_ts]),
        event=np.concatenate(
            [
                np.full(len(carted), EVENT_CART),
                np.full(n_b, EVENT_VIEW),
                np.full(n_b, EVENT_CART),
                np.full(n_tx_rows, EVENT_TRANSACTION),
            ]
        ).astype(np.int8),
        transaction=np.concatenate([np.full(len(carted) + 2 * n_b, -1), tx_index]),
        n_transactions=len(buying),
    )
