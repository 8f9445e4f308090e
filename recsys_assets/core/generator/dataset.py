"""The embedded default data set: a seeded synthetic RetailRocket (DESIGN.md §3).

``generate_dataset`` writes the four RetailRocket files — ``events.csv``,
``item_properties_part1.csv``, ``item_properties_part2.csv``, ``category_tree.csv`` — in exactly
the real format, plus ``generator_truth.json``, which is *not* part of the RetailRocket format
(readers ignore it): it lists what was planted so that tests can check models find it.

What it looks like: the real counts times ``scale`` (events by type, visitors, items, property
rows; categories grow sub-linearly), heavy-tailed item popularity and visitor activity,
30-minute sessions, a few bots with thousands of events, weekday and evening rhythm, weekly
property snapshots with prices and availability that move.

What is planted (learnable structure):

1. **taste** — visitors prefer a Dirichlet mix of a few root categories and pick items by
   latent factors (``sessions``): matrix factorisation and content models beat
   popularity;
2. **transitions** — every viewed item has ``len(next_slot_probs)`` successors in its category
   and sessions walk them with probability ``p_chain`` per step: kNN and session models beat
   popularity on next-item prediction;
3. **bundles** — groups of 2–3 items bought together in one transaction
   (``funnel``): association rules recover them with a high lift;
4. **prices and availability** move across the weekly snapshots, categories almost never
   (``properties``).

Seeded and deterministic: the same config gives byte-identical files. Vectorised: scale 1.0
(2.76M events, 20M property rows) takes well under a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from recsys_assets.core.data.schemas import (
    CATEGORY_TREE_FILE,
    EVENT_TYPES,
    EVENTS_FILE,
    PROPERTIES_FILES,
)
from recsys_assets.core.generator.catalog import (
    build_category_forest,
    build_items,
    build_next_items,
    write_category_tree,
)
from recsys_assets.core.generator.funnel import (
    EVENT_TRANSACTION,
    build_bundles,
    bundle_picks,
    generate_funnel,
)
from recsys_assets.core.generator.properties import write_item_properties
from recsys_assets.core.generator.sessions import (
    STEP_CHAIN,
    STEP_FRESH,
    STEP_REPEAT,
    Behaviour,
    Period,
    generate_views,
)

TRUTH_FILE = "generator_truth.json"
ITEMS_PER_TRANSACTION = 1.3  # real file: 22,457 rows for 17,672 transaction ids

# The real RetailRocket counts: scale 1.0 aims at these.
REAL_COUNTS = {
    "views": 2_664_312,
    "addtocarts": 69_332,
    "transactions": 22_457,
    "visitors": 1_407_580,
    "items_with_events": 235_061,
    "items": 417_053,
    "property_rows": 20_275_902,
    "categories": 1_669,
    "root_categories": 25,
}


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything that shapes a generated data set; the defaults look like RetailRocket."""

    scale: float = 0.05  # 1.0 ≈ the real data set's counts
    seed: int = 42
    start: str = "2015-05-03"  # first day (UTC), inclusive
    end: str = "2015-09-18"  # last day (UTC), inclusive
    n_bots: int | None = None  # default: a few, growing with sqrt(scale)
    bot_events: int | None = None  # mean events per bot; default thousands at scale 1
    # Popularity: weight ∝ (rank fraction + offset)^-exponent over the active share of items.
    active_share: float = 0.61
    zipf_exponent: float = 1.05
    zipf_offset: float = 0.002
    # Taste (planted structure 1).
    n_factors: int = 8
    taste_strength: float = 0.6
    taste_candidates: int = 8
    explore: float = 0.1
    # Transitions (planted structure 2): per step after the first, follow the chain / view the
    # same item again / pick afresh (the rest).
    p_chain: float = 0.55
    p_repeat: float = 0.12
    next_slot_probs: tuple[float, ...] = (0.6, 0.25, 0.15)
    # Bundles (planted structure 3).
    n_bundles: int | None = None  # default: max(5, 250 * scale)
    bundle_share: float = 0.25  # share of transactions that are a bundle purchase

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> None:
            raise ValueError(
                f"GeneratorConfig.{name}: expected {expected}, got {getattr(self, name)!r}"
            )

        if not self.scale > 0:
            bad("scale", "a positive number")
        for name in ("active_share", "bundle_share", "explore", "p_chain", "p_repeat"):
            if not 0 <= getattr(self, name) <= 1:
                bad(name, "a value in [0, 1]")
        if self.p_chain + self.p_repeat > 1:
            bad("p_repeat", f"p_chain + p_repeat <= 1 (p_chain={self.p_chain})")
        if (
            not self.next_slot_probs
            or min(self.next_slot_probs) < 0
            or sum(self.next_slot_probs) <= 0
        ):
            bad("next_slot_probs", "non-negative weights with a positive sum")
        if self.n_bots is not None and self.n_bots < 0:
            bad("n_bots", "a count >= 0")
        if self.bot_events is not None and self.bot_events < 1:
            bad("bot_events", "a count >= 1")
        if self.n_bundles is not None and self.n_bundles < 0:
            bad("n_bundles", "a count >= 0")
        if self.taste_candidates < 1 or self.n_factors < 1:
            bad("taste_candidates", "taste_candidates >= 1 and n_factors >= 1")
        if self.zipf_exponent <= 0 or self.zipf_offset <= 0:
            bad("zipf_exponent", "zipf_exponent > 0 and zipf_offset > 0")
        Period.from_dates(self.start, self.end)  # raises on bad dates


@dataclass
class PlantedStructure:
    """What the generator planted, in item/visitor ids as written to the files."""

    bundles: list[tuple[int, ...]]  # items bought together (2–3 each)
    next_item_ids: np.ndarray  # (M,) every item that can be viewed …
    next_items: np.ndarray  # (M, n_next) … and its planted successors
    next_slot_probs: tuple[float, ...]
    p_chain: float
    p_repeat: float
    bot_visitor_ids: list[int]
    bundle_purchases: list[int] = field(default_factory=list)  # planted purchases per bundle
    step_counts: dict[str, int] = field(default_factory=dict)  # realised steps after the first

    def successors(self) -> dict[int, set[int]]:
        """Item id → set of its planted successor ids."""
        return {
            int(i): set(map(int, row))
            for i, row in zip(self.next_item_ids, self.next_items, strict=True)
        }

    def summary(self, n_sample_items: int = 1000) -> dict:
        """JSON-ready summary; successors only for the first ``n_sample_items`` (most popular)."""
        return {
            "bundles": [list(b) for b in self.bundles],
            "bundle_purchases": self.bundle_purchases,
            "transitions": {
                "scope": "successors are other items of the same category (of its root when < 4)",
                "n_items": len(self.next_item_ids),
                "n_next": int(self.next_items.shape[1]) if self.next_items.ndim == 2 else 0,
                "next_slot_probs": list(self.next_slot_probs),
                "p_chain": self.p_chain,
                "p_repeat": self.p_repeat,
                "p_fresh": round(1.0 - self.p_chain - self.p_repeat, 10),
                "realised_steps": self.step_counts,
                "sample_most_popular": {
                    str(int(i)): [int(x) for x in row]
                    for i, row in zip(
                        self.next_item_ids[:n_sample_items],
                        self.next_items[:n_sample_items],
                        strict=True,
                    )
                },
            },
            "bot_visitor_ids": self.bot_visitor_ids,
        }


@dataclass
class GeneratedDataset:
    out_dir: Path
    n_events: int
    n_views: int
    n_addtocarts: int
    n_transactions: int
    n_visitors: int
    n_items: int  # items with at least one event
    n_property_rows: int
    n_categories: int
    seconds: float
    truth: PlantedStructure

    def summary(self) -> str:
        return (
            f"{self.n_events:,} events ({self.n_views:,} views, "
            f"{self.n_addtocarts:,} add-to-carts, {self.n_transactions:,} transactions), "
            f"{self.n_visitors:,} visitors, "
            f"{self.n_items:,} items with events, {self.n_property_rows:,} property rows, "
            f"{self.n_categories:,} categories, {len(self.truth.bundles)} bundles, "
            f"{len(self.truth.bot_visitor_ids)} bots -> {self.out_dir} in {self.seconds:.1f} s"
        )


@dataclass(frozen=True)
class _Targets:
    views: int
    carts: int
    transactions: int
    visitors: int
    items: int
    active_items: int
    categories: int
    roots: int
    property_rows: int
    bots: int
    bot_events: int
    bundles: int


def _default_bot_events(scale: float, views: int) -> int:
    """Thousands of events per bot at scale 1, hundreds at small scales (still over the
    cleaning rule's 200 an hour); never more than a tenth of all views per bot."""
    return max(1, min(max(300, round(4000 * scale**0.35)), views // 10))


def _targets(cfg: GeneratorConfig) -> _Targets:
    s = cfg.scale
    roots = max(4, round(REAL_COUNTS["root_categories"] * s**0.35))
    items = max(round(REAL_COUNTS["items"] * s), 60)
    views = max(round(REAL_COUNTS["views"] * s), 200)
    return _Targets(
        views=views,
        carts=max(round(REAL_COUNTS["addtocarts"] * s), 12),
        transactions=max(round(REAL_COUNTS["transactions"] * s), 6),
        visitors=max(round(REAL_COUNTS["visitors"] * s), 50),
        items=items,
        active_items=max(round(items * cfg.active_share), 20),
        categories=max(30, roots + 3, round(REAL_COUNTS["categories"] * s**0.5)),
        roots=roots,
        property_rows=round(REAL_COUNTS["property_rows"] * s),
        bots=cfg.n_bots if cfg.n_bots is not None else max(1, round(10 * s**0.5)),
        bot_events=cfg.bot_events if cfg.bot_events is not None else _default_bot_events(s, views),
        bundles=cfg.n_bundles if cfg.n_bundles is not None else max(5, round(250 * s)),
    )


def generate_dataset(
    out_dir: str | Path, config: GeneratorConfig = GeneratorConfig()
) -> GeneratedDataset:
    """Write the four RetailRocket files and ``generator_truth.json`` into ``out_dir``.

    ``events.csv`` is written last, so its presence means the set is complete. A folder that
    already holds any of these files is refused (``FileExistsError`` naming them): the generator
    never overwrites a file it did not create.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    refuse_existing(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg, tg = config, _targets(config)
    period = Period.from_dates(cfg.start, cfg.end)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(7)]
    r_tree, r_items, r_next, r_bundles, r_views, r_funnel, r_props = streams

    forest = build_category_forest(r_tree, tg.categories, tg.roots)
    items = build_items(
        r_items,
        forest,
        tg.items,
        min(tg.active_items, tg.items),
        zipf_exponent=cfg.zipf_exponent,
        zipf_offset=cfg.zipf_offset,
        n_factors=cfg.n_factors,
    )
    next_items = build_next_items(r_next, forest, items, len(cfg.next_slot_probs))

    # Bundle purchases come out of the cart and transaction budgets (each member: view, cart, buy).
    bundles = build_bundles(r_bundles, forest, items, tg.bundles)
    picks = bundle_picks(
        r_bundles, bundles, round(cfg.bundle_share * tg.transactions / ITEMS_PER_TRANSACTION)
    )
    sizes = bundles.size[picks]
    keep = np.cumsum(sizes) <= min(tg.transactions, tg.carts) // 2
    picks, bundle_rows = picks[keep], int(sizes[keep].sum())

    bot_events = np.maximum(
        1, np.round(tg.bot_events * r_views.uniform(0.6, 1.4, tg.bots)).astype(np.int64)
    )
    n_views = tg.views - bundle_rows - int(bot_events.sum())
    n_regular = tg.visitors - tg.bots
    if n_views < n_regular or n_regular < 1:
        raise ValueError(
            f"GeneratorConfig.scale={cfg.scale}: {tg.views} views leave {n_views} for "
            f"{n_regular} ordinary visitors after {tg.bots} bots; lower n_bots/bot_events"
        )
    behaviour = Behaviour(
        p_chain=cfg.p_chain,
        p_repeat=cfg.p_repeat,
        next_slot_probs=tuple(cfg.next_slot_probs),
        taste_strength=cfg.taste_strength,
        taste_candidates=cfg.taste_candidates,
        explore=cfg.explore,
    )
    views = generate_views(
        r_views,
        period=period,
        forest=forest,
        items=items,
        next_items=next_items,
        n_visitors=n_regular,
        n_views=n_views,
        n_factors=cfg.n_factors,
        behaviour=behaviour,
        bot_events=bot_events,
    )
    funnel = generate_funnel(
        r_funnel,
        views,
        items,
        bundles,
        picks,
        n_carts=tg.carts - bundle_rows,
        n_purchased=tg.transactions - bundle_rows,
    )

    # Assemble, pull sessions that run past the end back inside the period, map to ids.
    session = np.concatenate([views.session, funnel.session])
    ts = np.concatenate([views.ts, funnel.ts])
    code = np.concatenate([np.zeros(len(views.ts), dtype=np.int8), funnel.event])
    item = np.concatenate([views.item, funnel.item])
    tx = np.concatenate([np.full(len(views.ts), -1), funnel.transaction])
    last = np.full(len(views.session_length), np.iinfo(np.int64).min)
    np.maximum.at(last, session, ts)
    ts -= np.maximum(last - (period.end_ms - 1), 0)[session]

    visitor_ids = r_funnel.permutation(tg.visitors).astype(np.int64)
    vid = visitor_ids[views.session_visitor[session]]
    tx_ids = r_funnel.permutation(funnel.n_transactions).astype(np.int64)
    txid = np.where(tx >= 0, tx_ids[np.maximum(tx, 0)], -1)
    order = np.lexsort((code, vid, ts))
    events = pl.DataFrame(
        {
            "timestamp": ts[order],
            "visitorid": vid[order],
            "event": pl.Series(list(EVENT_TYPES)).gather(code[order]),
            "itemid": items.ids[item[order]],
            "transactionid": txid[order],
        }
    ).with_columns(
        transactionid=pl.when(pl.col("transactionid") >= 0).then(pl.col("transactionid"))
    )

    n_categories = write_category_tree(forest, out)
    prop_rows = write_item_properties(r_props, forest, items, period, out, tg.property_rows)

    active = np.flatnonzero(items.weight > 0)
    active = active[np.argsort(-items.weight[active], kind="stable")]
    after_first = (
        np.r_[False, views.session[1:] == views.session[:-1]] & ~views.session_is_bot[views.session]
    )
    steps = np.bincount(views.step[after_first], minlength=3)
    truth = PlantedStructure(
        bundles=[tuple(int(items.ids[x]) for x in m) for m in bundles.as_lists()],
        next_item_ids=items.ids[active],
        next_items=items.ids[next_items[active]],
        next_slot_probs=tuple(cfg.next_slot_probs),
        p_chain=cfg.p_chain,
        p_repeat=cfg.p_repeat,
        bot_visitor_ids=sorted(int(x) for x in visitor_ids[n_regular:]),
        bundle_purchases=np.bincount(picks, minlength=len(bundles)).tolist(),
        step_counts={
            "chain": int(steps[STEP_CHAIN]),
            "repeat": int(steps[STEP_REPEAT]),
            "fresh": int(steps[STEP_FRESH]),
        },
    )
    counts = np.bincount(code, minlength=3)
    result = GeneratedDataset(
        out_dir=out,
        n_events=events.height,
        n_views=int(counts[0]),
        n_addtocarts=int(counts[1]),
        n_transactions=int(counts[EVENT_TRANSACTION]),
        n_visitors=int(np.unique(vid).size),
        n_items=int(np.unique(item).size),
        n_property_rows=prop_rows["total"],
        n_categories=n_categories,
        seconds=0.0,
        truth=truth,
    )
    truth_doc = {
        "note": (
            "Written by recsys_assets.core.generator; not part of the RetailRocket format. "
            "Readers of the raw files ignore it."
        ),
        "config": asdict(cfg),
        "counts": {
            "events": result.n_events,
            "views": result.n_views,
            "addtocarts": result.n_addtocarts,
            "transactions": result.n_transactions,
            "transaction_ids": funnel.n_transactions,
            "visitors": result.n_visitors,
            "items_with_events": result.n_items,
            "items": items.n,
            "property_rows": result.n_property_rows,
            "property_snapshots": prop_rows["snapshots"],
            "categories": n_categories,
        },
        **truth.summary(),
    }
    (out / TRUTH_FILE).write_text(json.dumps(truth_doc, indent=1) + "\n", encoding="utf-8")
    events.write_csv(out / EVENTS_FILE, line_terminator="\n")
    result.seconds = time.perf_counter() - t0
    return result


GENERATED_FILES = (*PROPERTIES_FILES, CATEGORY_TREE_FILE, TRUTH_FILE, EVENTS_FILE)  # write order


def refuse_existing(out_dir: Path) -> None:
    """Raise ``FileExistsError`` naming every file of a data set that ``out_dir`` already holds."""
    existing = [name for name in GENERATED_FILES if (out_dir / name).exists()]
    if existing:
        raise FileExistsError(
            f"{out_dir} already holds {', '.join(existing)}; the generator never overwrites "
            "files, so remove them first or choose another folder"
        )


def ensure_dataset(
    raw_dir: str | Path, config: GeneratorConfig = GeneratorConfig()
) -> GeneratedDataset | None:
    """Generate into ``raw_dir`` only when ``raw_dir/events.csv`` is missing; else return None.

    The set is written to a temporary folder beside ``raw_dir`` and hard-linked in, events last,
    so a crash never leaves a half-written set that looks complete. A link never replaces an
    existing file (unlike a rename), so a file that appears meanwhile is kept; the files linked
    by this call are removed again and the call fails.
    """
    raw = Path(raw_dir)
    if (raw / EVENTS_FILE).exists():
        return None
    refuse_existing(raw)
    raw.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{raw.name}.generating-", dir=raw.parent))
    linked: list[Path] = []
    try:
        result = generate_dataset(tmp, config)
        raw.mkdir(parents=True, exist_ok=True)
        try:
            for name in GENERATED_FILES:
                os.link(tmp / name, raw / name)  # FileExistsError instead of overwriting
                linked.append(raw / name)
        except FileExistsError:
            for path in linked:  # only what this call created
                path.unlink()
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return replace(result, out_dir=raw)
