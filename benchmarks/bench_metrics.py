"""Ranking metrics over 200k users × 20 ranks: python benchmarks/bench_metrics.py [--repeat 5]."""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import polars as pl

from recsys_assets.core.evaluation.metrics import lists_to_frame, ranking_metrics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n_users, k, n_items = args.users, 20, 50_000
    items = (np.arange(k)[None, :] * 997 + rng.integers(0, n_items, (n_users, 1))) % n_items
    frame = lists_to_frame(np.arange(n_users), items, rng.random((n_users, k)), "m")
    truth = pl.DataFrame(
        {
            "user_id": np.repeat(np.arange(n_users), 3),
            "item_id": rng.integers(0, n_items, 3 * n_users),
        }
    )
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        ranking_metrics(frame, truth, n_catalogue_items=n_items)
        times.append(time.perf_counter() - start)
    print(
        f"ranking_metrics, {n_users:,} users × {k} ranks: median {statistics.median(times):.3f} s "
        f"(min {min(times):.3f}, max {max(times):.3f}, n={args.repeat})"
    )


if __name__ == "__main__":
    main()
