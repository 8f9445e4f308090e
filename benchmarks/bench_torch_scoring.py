"""NCF and GRU4Rec scoring at scale 1.0: time and peak memory of ``recommend`` for test users.

    python benchmarks/bench_torch_scoring.py [--large /tmp/gen10] [--models ncf gru4rec]
        [--users 0] [--check-users 2000] [--ncf-epochs 1] [--gru-epochs 1] [--save DIR]
        [--threads 0] [--similar 0]

The eval_recommendations asset asks each model for top-100 lists of every test user with
train+valid history (~83k users at scale 1.0, 4,096 per ``recommend`` call). This does the
same outside Dagster on the generated data and prints, per model:

- fit seconds (wall and CPU) and ``recommend`` seconds (wall and CPU) for the users;
- the peak resident memory of the process during fit and during scoring (psutil sampled
  every 50 ms; the growth over the RSS before the step is the step's own cost);
- NCF: how far its two-stage top-100 is from exact NeuMF scoring of the whole catalogue,
  as the mean overlap of the two top-100 lists over ``--check-users`` users;
- with ``--similar N``: ``similar_items`` (top-20) seconds for the N most popular items, in
  the serving bundle's 4,096-item calls.

``--threads 1`` scores on one torch thread, as each model does in the graph (one core per
model); 0 leaves the model's choice (one thread per core).

Few epochs suffice for timing (scoring cost does not depend on the weights); the overlap is
more meaningful on a model trained as in the graph (``--ncf-epochs 20``, or ``--load`` of
bytes written earlier with ``--save``). The machine is shared: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from generated_frames import load_generated  # noqa: E402

from recsys_assets.core.data.training_data import build_training_data  # noqa: E402
from recsys_assets.core.models import create_model  # noqa: E402
from recsys_assets.core.models.base import Recommender  # noqa: E402

EVAL_K, CALL_USERS, SIMILAR_K = 100, 4096, 20


class PeakRSS:
    """Peak resident set size of this process while the block runs (sampled)."""

    def __init__(self, every: float = 0.05) -> None:
        self.proc, self.every = psutil.Process(), every
        self.before = self.peak = 0

    def __enter__(self) -> PeakRSS:
        self.before = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    def __str__(self) -> str:
        gib = 2**30
        return f"peak RSS {self.peak / gib:.2f} GiB (+{(self.peak - self.before) / gib:.2f})"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def test_users_with_history(splits: pl.DataFrame, data) -> np.ndarray:
    """Users with a test event and train+valid history (those eval_recommendations scores)."""
    users = splits.filter(pl.col("split") == "test")["user_id"].unique().sort().to_numpy()
    rows = data.user_index(users)
    known = rows >= 0
    known[known] = np.diff(data.user_item.indptr)[rows[known]] > 0
    return users[known]


def recommend_all(model: Recommender, users: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Top-50 item ids for ``users`` in eval_recommendations' call sizes; (ids, wall, cpu)."""
    t, c = time.perf_counter(), time.process_time()
    out = [
        model.recommend(users[s : s + CALL_USERS], k=EVAL_K).item_ids
        for s in range(0, users.size, CALL_USERS)
    ]
    ids = np.concatenate(out) if out else np.empty((0, EVAL_K), np.int64)
    return ids, time.perf_counter() - t, time.process_time() - c


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean share of the k items of each row of ``a`` that are also in the row of ``b``."""
    rows = np.repeat(np.arange(a.shape[0]), a.shape[1])
    ka = rows * (1 << 40) + a.ravel()
    kb = np.repeat(np.arange(b.shape[0]), b.shape[1]) * (1 << 40) + b.ravel()
    return float(np.isin(ka, kb).mean())


def bench(name, data, users, args) -> list[str]:
    lines = []
    saved = args.load / f"{name}.bytes" if args.load else None
    with PeakRSS() as fit_mem:
        t, c = time.perf_counter(), time.process_time()
        if saved is not None and saved.exists():
            model = Recommender.from_bytes(saved.read_bytes())
            how = f"loaded {saved}"
        else:
            epochs = args.ncf_epochs if name == "ncf" else args.gru_epochs
            model = create_model(name, {"n_epochs": epochs}).fit(data)
            how = f"fit {len(model.history.epochs)} epoch(s)"
        fit_wall, fit_cpu = time.perf_counter() - t, time.process_time() - c
    lines.append(f"{name}: {how} in {fit_wall:.1f}s ({fit_cpu:.1f}s CPU), {fit_mem}")
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        (args.save / f"{name}.bytes").write_bytes(model.to_bytes())
    if args.threads:  # after fit/load: the model sets the thread count when it loads
        import torch

        torch.set_num_threads(args.threads)
    with PeakRSS() as rec_mem:
        ids, wall, cpu = recommend_all(model, users)
    lines.append(
        f"{name}: recommend top-{EVAL_K} for {users.size:,} users {wall:.1f}s ({cpu:.1f}s CPU, "
        f"{users.size / wall:,.0f} users/s), {rec_mem}; load {load()}"
    )
    if args.similar > 0:
        order = np.argsort(-model._popularity, kind="stable")[: args.similar]
        items = model.item_ids[order]
        t = time.perf_counter()
        for s in range(0, items.size, CALL_USERS):
            model.similar_items(items[s : s + CALL_USERS], k=SIMILAR_K, batch_size=CALL_USERS)
        wall = time.perf_counter() - t
        lines.append(
            f"{name}: similar_items top-{SIMILAR_K} for {items.size:,} items {wall:.1f}s "
            f"({items.size / wall:,.0f} items/s)"
        )
    if name == "ncf" and args.check_users > 0:
        check = users[:: max(1, users.size // args.check_users)][: args.check_users]
        t = time.perf_counter()
        n_cand = model.params["score_candidates"]
        model.params["score_candidates"] = 0  # exact NeuMF on every (user, item) pair
        try:
            truth = model.recommend(check, k=EVAL_K).item_ids
        finally:
            model.params["score_candidates"] = n_cand
        mine = ids[np.searchsorted(users, check)]
        lines.append(
            f"ncf: top-{EVAL_K} overlap with exact NeuMF over the catalogue, {check.size:,} users: "
            f"{overlap(mine, truth):.4f} (exact scoring took {time.perf_counter() - t:.1f}s)"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--large", type=Path, default=Path("/tmp/gen10"))
    ap.add_argument("--models", nargs="+", default=["ncf", "gru4rec"])
    ap.add_argument("--users", type=int, default=0, help="score the first N (0: all)")
    ap.add_argument("--check-users", type=int, default=2000)
    ap.add_argument("--ncf-epochs", type=int, default=1)
    ap.add_argument("--gru-epochs", type=int, default=1)
    ap.add_argument("--save", type=Path, help="write the fitted models' bytes here")
    ap.add_argument("--load", type=Path, help="read <model>.bytes from here instead of fitting")
    ap.add_argument("--threads", type=int, default=0, help="torch threads to score on (0: as set)")
    ap.add_argument("--similar", type=int, default=0, help="time similar_items for N items")
    args = ap.parse_args(argv)
    print(f"load average at start: {load()}")
    t = time.perf_counter()
    splits, catalog, tree = load_generated(args.large)
    data = build_training_data(splits, catalog, tree, use_splits=("train", "valid"))
    users = test_users_with_history(splits, data)
    if args.users:
        users = users[: args.users]
    del splits, catalog, tree
    print(
        f"{data.n_users:,} users x {data.n_items:,} items, {users.size:,} test users with "
        f"history; data built in {time.perf_counter() - t:.0f}s"
    )
    for name in args.models:
        for line in bench(name, data, users, args):
            print(line, flush=True)
    print(f"load average at end: {load()} (2 cores shared with other jobs)")


if __name__ == "__main__":
    main()
