"""A/B report benchmark: the paired bootstrap at scale 1.0 (target: 2,000 resamples ≤ 10 s).

    python benchmarks/bench_ab.py [--users 150000] [--models 7] [--resamples 2000] [--repeat 3]

Simulates per-user outcomes of the size of the scale-1.0 test set (every evaluated user ×
every model × 5 outcomes: hit@10, NDCG@10, click, add-to-cart, purchase; correlated across
models, with a pre-period covariate) and times, median over ``--repeat``:

- ``bootstrap_means`` over all model × outcome columns at once (what ``ab_test_table`` runs);
- references measured in the same run, because the shared machine is noisy: the floor (only
  drawing the same resample indices) and the naive way (fancy-index gather per resample, timed
  on 20 resamples and extrapolated);
- the whole ``ab_test_table`` (champion vs every challenger: Welch, paired, CUPED, SRM, MDE,
  Holm, bootstrap CIs).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from recsys_assets.core.experiments.ab_report import (
    CHAMPION_VS_CHALLENGER,
    ABSettings,
    Comparison,
    ab_test_table,
)
from recsys_assets.core.experiments.bootstrap import _CHUNK_ELEMENTS, bootstrap_means
from recsys_assets.core.experiments.outcomes import OutcomeMatrix

TARGET_SECONDS = 10.0


def simulate(n_users: int, n_models: int, seed: int = 0) -> OutcomeMatrix:
    rng = np.random.default_rng(seed)
    activity = rng.poisson(4, n_users).astype(np.float64)
    propensity = np.clip(0.03 + 0.01 * activity, 0, 0.6)
    shared = rng.random(n_users)  # users who hit with one model tend to hit with the others
    models, values = [], []
    for m in range(n_models):
        quality = 1.0 + 0.05 * m
        own = rng.random(n_users)
        hit = (0.7 * shared + 0.3 * own) < propensity * quality
        ndcg = hit * rng.uniform(0.3, 1.0, n_users)
        click = hit & (rng.random(n_users) < 0.9)
        cart = click & (rng.random(n_users) < 0.2)
        purchase = cart & (rng.random(n_users) < 0.4)
        values.append(np.stack([hit, ndcg, click, cart, purchase], axis=1).astype(np.float64))
        models.append(f"model_{m}")
    return OutcomeMatrix(
        user_ids=np.sort(rng.choice(10**7, n_users, replace=False)).astype(np.int64),
        models=tuple(models),
        outcomes=("hit_at_10", "ndcg_at_10", "click", "add_to_cart", "purchase"),
        values=np.ascontiguousarray(np.stack(values, axis=1)),
        covariate=np.log1p(activity),
    )


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def draw_only(n: int, resamples: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, _CHUNK_ELEMENTS // n))
    for start in range(0, resamples, chunk):
        rng.integers(0, n, size=(min(chunk, resamples - start), n), dtype=np.int32)


def naive(values: np.ndarray, resamples: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n = values.shape[0]
    for _ in range(resamples):
        values[rng.integers(0, n, n)].mean(axis=0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=150_000)
    parser.add_argument("--models", type=int, default=7)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    matrix = simulate(args.users, args.models)
    flat = matrix.flat()
    n, m = flat.shape
    print(
        f"{n:,} users x {m} columns ({args.models} models x 5 outcomes), {args.resamples} resamples"
    )

    boot = timed(lambda: bootstrap_means(flat, args.resamples, seed=1), args.repeat)
    floor = timed(lambda: draw_only(n, args.resamples), args.repeat)
    naive_20 = timed(lambda: naive(flat, 20), args.repeat)
    naive_all = naive_20 * args.resamples / 20
    comparisons = [
        Comparison(matrix.models[-1], other, CHAMPION_VS_CHALLENGER) for other in matrix.models[:-1]
    ]
    settings = ABSettings(n_bootstrap=args.resamples)
    report = timed(lambda: ab_test_table(matrix, comparisons, settings), max(1, args.repeat - 1))

    verdict = "PASS" if boot <= TARGET_SECONDS else "FAIL"
    print(f"{'step':<46}{'seconds':>10}{'x floor':>10}")
    rows = [
        ("bootstrap_means (all columns, paired)", boot),
        ("floor: drawing the indices only", floor),
        ("naive gather per resample (extrapolated)", naive_all),
        (f"ab_test_table ({len(comparisons)} comparisons x 5 metrics)", report),
    ]
    for label, seconds in rows:
        print(f"{label:<46}{seconds:>10.2f}{seconds / floor:>10.2f}")
    print(
        f"bootstrap {boot:.2f} s (median of {args.repeat}) vs target {TARGET_SECONDS:.0f} s: "
        f"{verdict}; naive / vectorised = {naive_all / boot:.1f}x"
    )


if __name__ == "__main__":
    main()
