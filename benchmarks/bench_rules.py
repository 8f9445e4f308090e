"""Association rules on dense baskets: python benchmarks/bench_rules.py [--repeat 3].

The case the search bound exists for (issue 7.4): 5,000 baskets of 50–300 distinct items over
2,000 items with Zipf-like popularity, what sessions that cart tens to hundreds of items look
like. Without the bound mlxtend did not finish in 300 s on it. Each run does what the
``association_rules`` asset does per basket type: bound the search once, then Apriori and
FP-Growth. Printed: the median (min, max) of each step and of the whole, and the bound.

A reference measured in the same run mines 5,000 baskets of ordinary transaction sizes (1–6
items over 400, a planted bundle), where the bound changes nothing; the ratio shows how much
slower the dense case is on the same machine at the same moment.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import polars as pl

from recsys_assets.core.analytics.rules import BASKETS_SCHEMA, mine_rules, prune_baskets

SETTINGS = dict(min_item_count=5, max_items=2000, min_support=0.002)  # the asset's defaults
RULES = dict(min_confidence=0.1, min_lift=1.5)


def dense_baskets(n_baskets: int, n_items: int, low: int, high: int, seed: int) -> pl.DataFrame:
    """``low``..``high`` distinct items per basket, drawn by popularity ``1 / rank^0.8``."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    # Exponential race: the smallest keys of a row are a draw without replacement.
    keys = -np.log(rng.random((n_baskets, n_items))) / weights
    order = np.argsort(keys, axis=1)
    sizes = rng.integers(low, high + 1, n_baskets)
    mask = np.arange(n_items)[None, :] < sizes[:, None]
    rows = np.broadcast_to(np.arange(n_baskets)[:, None], order.shape)[mask]
    return pl.DataFrame({"basket_id": rows, "item_id": order[mask]}, schema=BASKETS_SCHEMA)


def ordinary_baskets(n_baskets: int, n_items: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 7, n_baskets)
    items = rng.integers(10, n_items, sizes.sum())
    bundle = np.flatnonzero(rng.random(n_baskets) < 0.05)
    return pl.DataFrame(
        {
            "basket_id": np.concatenate(
                [np.repeat(np.arange(n_baskets), sizes), np.repeat(bundle, 3)]
            ),
            "item_id": np.concatenate([items, np.tile([1, 2, 3], bundle.size)]),
        },
        schema=BASKETS_SCHEMA,
    )


def run_once(baskets: pl.DataFrame) -> tuple[dict[str, float], dict, dict[str, int]]:
    seconds, found = {}, {}
    start = time.perf_counter()
    pruned = prune_baskets(baskets, **SETTINGS)
    seconds["bound"] = time.perf_counter() - start
    for algorithm in ("apriori", "fpgrowth"):
        t = time.perf_counter()
        found[algorithm] = mine_rules(pruned, algorithm=algorithm, **RULES).height
        seconds[algorithm] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    return seconds, pruned.bound.as_metadata(), found


def summarise(name: str, runs: list[dict[str, float]]) -> dict[str, float]:
    medians = {}
    for step in runs[0]:
        values = [r[step] for r in runs]
        medians[step] = statistics.median(values)
        print(
            f"  {name:8s} {step:9s} median {medians[step]:7.3f} s "
            f"(min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"
        )
    return medians


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baskets", type=int, default=5_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--low", type=int, default=50)
    parser.add_argument("--high", type=int, default=300)
    parser.add_argument(
        "--limit", type=float, default=10.0, help="seconds the dense total may take"
    )
    args = parser.parse_args()

    dense = dense_baskets(args.baskets, args.items, args.low, args.high, seed=0)
    ordinary = ordinary_baskets(args.baskets, 400, seed=0)  # the bound does not bind here
    sizes = dense.group_by("basket_id").len()["len"]
    print(
        f"dense: {dense.height:,} (basket, item) rows, {args.baskets:,} baskets of "
        f"{sizes.min()}–{sizes.max()} items (median {sizes.median():.0f}) over "
        f"{dense['item_id'].n_unique():,} items; ordinary: {ordinary.height:,} rows"
    )
    runs = {"dense": [], "ordinary": []}
    last = {}
    for _ in range(args.repeat):  # interleaved, so both see the same load on the shared cores
        for name, frame in (("dense", dense), ("ordinary", ordinary)):
            seconds, bound, found = run_once(frame)
            runs[name].append(seconds)
            last[name] = bound, found  # deterministic: the same on every run
    medians = {name: summarise(name, r) for name, r in runs.items()}
    print("dense bound:", json.dumps(last["dense"][0]))
    print("dense rules found:", last["dense"][1])
    ordinary_bound, ordinary_found = last["ordinary"]
    print(
        f"ordinary bound: raised={ordinary_bound['min_support_raised']}, "
        f"baskets_capped={ordinary_bound['baskets_capped']}, rules found: {ordinary_found}"
    )
    ratio = medians["dense"]["total"] / max(medians["ordinary"]["total"], 1e-9)
    ok = medians["dense"]["total"] <= args.limit
    print(
        f"dense total median {medians['dense']['total']:.2f} s "
        f"({ratio:.1f}× the ordinary case in the same run); limit {args.limit:.0f} s: "
        f"{'OK' if ok else 'OVER'}"
    )
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
