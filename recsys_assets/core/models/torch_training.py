"""The one small training helper the torch models (NCF, GRU4Rec) share.

Seeding, device choice, shuffled batching, early stopping on a validation metric and one
progress line per epoch (loss, validation metric, events/s) through ``logging``: the pipeline
routes ``recsys_assets.*`` loggers into the Dagster log. A model supplies ``run_epoch`` (one
pass over its data, returning the mean loss and the number of training events) and optionally
``validate`` (higher is better); :func:`train_epochs` does the rest.

A wall-clock budget (``max_train_seconds``) bounds a fit on data far larger than the defaults
were tuned on: an epoch is only started when the time so far plus the longest epoch yet
(validation included) still fits, so a fit overshoots the budget by at most one epoch's
variation, never by a whole epoch. The history says why training stopped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from recsys_assets.core.cpu import resolve_threads

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")

# Why train_epochs stopped (TrainingHistory.stop_reason)
STOP_EPOCHS = "epochs"  # ran all n_epochs
STOP_EARLY = "early_stop"  # no validation gain for `patience` epochs
STOP_BUDGET = "budget"  # another epoch would have passed max_train_seconds


def check_budget(value: object) -> None:
    """``max_train_seconds`` must be a positive number or None (no budget)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"max_train_seconds must be a positive number or None, got {value!r}")
    if not (math.isfinite(float(value)) and value > 0):
        raise ValueError(f"max_train_seconds must be a positive number or None, got {value!r}")


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch (CPU and CUDA) and return a numpy generator for the model's own draws.

    Torch's global generator drives dropout and initialisation; a numpy ``Generator`` (never the
    global numpy state) drives negative sampling and shuffling, so a seed fixes the whole run.
    """
    torch.manual_seed(int(seed))
    return np.random.default_rng(int(seed))


def choose_device(device: str = "auto", num_threads: int = 0) -> torch.device:
    """CUDA when asked for or ("auto") present, else CPU with ``num_threads`` torch threads.

    ``num_threads`` 0 means one per available core: torch's default may count the machine's
    cores rather than this process's share of them and oversubscribe a container.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device")
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    threads = resolve_threads(num_threads)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.device("cpu")


@contextmanager
def torch_threads(num_threads: int) -> Iterator[int]:
    """Torch's intra-op thread count set to ``num_threads`` (0: one per core) inside the block,
    restored after.

    The thread count is global to the process, and Dagster runs every asset of a run in one:
    the torch models train with one thread (a step is many small ops, and OpenMP barriers cost
    more than they save on two shared cores), but a model that left the process at one thread
    made every later product single-threaded, their evaluation's (users x items) scoring
    included, which two threads run in about half the time.
    """
    before = torch.get_num_threads()
    threads = resolve_threads(num_threads)
    if threads != before:
        torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def shuffled_batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Index arrays covering ``range(n)`` once, in a random order, ``batch_size`` at a time."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


@dataclass
class EarlyStopping:
    """Keeps the best state seen so far; ``stop`` once ``patience`` epochs bring no gain."""

    patience: int
    min_delta: float = 0.0
    best: float = -math.inf
    best_epoch: int = -1
    best_state: dict | None = None
    bad_epochs: int = 0

    def update(self, epoch: int, metric: float, module: torch.nn.Module) -> bool:
        """Record ``metric`` of ``epoch``; True when training should stop."""
        if metric > self.best + self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = metric, epoch, 0
            # a compact copy per tensor (parameters may be strided views into packed tables)
            self.best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= self.patience


@dataclass
class EpochStats:
    epoch: int
    loss: float
    events: int
    seconds: float
    metric: float | None = None
    # CPU seconds of this process in the epoch: on a shared machine the wall-clock time
    # mostly measures the other jobs (a load of 7 on 2 cores made an epoch 5x its CPU time)
    cpu_seconds: float | None = None

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")

    @property
    def events_per_cpu_second(self) -> float | None:
        if self.cpu_seconds is None:
            return None
        return self.events / self.cpu_seconds if self.cpu_seconds > 0 else float("inf")


@dataclass
class TrainingHistory:
    epochs: list[EpochStats] = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    stopped_early: bool = False
    # STOP_EPOCHS, STOP_EARLY or STOP_BUDGET; the budget and the wall-clock seconds of the
    # whole loop (epochs and validation)
    stop_reason: str = STOP_EPOCHS
    max_train_seconds: float | None = None
    train_seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "epochs": [
                {
                    "epoch": e.epoch,
                    "loss": e.loss,
                    "events": e.events,
                    "seconds": round(e.seconds, 4),
                    "cpu_seconds": None if e.cpu_seconds is None else round(e.cpu_seconds, 4),
                    "metric": e.metric,
                }
                for e in self.epochs
            ],
            "best_epoch": self.best_epoch,
            "best_metric": self.best_metric,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
            "max_train_seconds": self.max_train_seconds,
            "train_seconds": round(self.train_seconds, 4),
        }


def train_epochs(
    name: str,
    module: torch.nn.Module,
    n_epochs: int,
    run_epoch: Callable[[int], tuple[float, int]],
    validate: Callable[[], float] | None = None,
    patience: int = 3,
    metric_name: str = "metric",
    max_train_seconds: float | None = None,
    train_threads: int | None = None,
) -> TrainingHistory:
    """Run up to ``n_epochs`` epochs, log each, stop early on ``validate`` and keep the best.

    With ``validate`` the module ends with the weights of its best epoch; without it, with
    those of the last epoch. A NaN loss stops training with a ValueError naming the epoch.
    With ``max_train_seconds``, no epoch is started once the elapsed wall-clock time plus the
    longest epoch so far (its validation included) would pass it; the first always runs.
    With ``train_threads``, the epochs run with that many torch threads (0: one per core) and
    validation with the thread count the caller had (:func:`torch_threads`).
    """
    check_budget(max_train_seconds)
    budget = None if max_train_seconds is None else float(max_train_seconds)
    history = TrainingHistory(max_train_seconds=budget)
    stopper = EarlyStopping(patience=max(1, int(patience))) if validate is not None else None
    loop_start, longest = time.perf_counter(), 0.0
    for epoch in range(1, n_epochs + 1):
        start, cpu_start = time.perf_counter(), time.process_time()
        module.train()
        if train_threads is None:
            loss, events = run_epoch(epoch)
        else:
            with torch_threads(train_threads):
                loss, events = run_epoch(epoch)
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        if not math.isfinite(loss):
            raise ValueError(f"{name}: training loss became {loss} in epoch {epoch}")
        metric = None
        stop = False
        if stopper is not None:
            module.eval()
            with torch.no_grad():
                metric = float(validate())
            stop = stopper.update(epoch, metric, module)
        elapsed = time.perf_counter() - loop_start
        longest = max(longest, time.perf_counter() - start)
        stats = EpochStats(epoch, float(loss), int(events), seconds, metric, cpu_seconds)
        history.epochs.append(stats)
        log.info(
            "%s: epoch %d/%d loss %.5f%s, %.1fs (%.1fs CPU), %s events/s",
            name,
            epoch,
            n_epochs,
            stats.loss,
            ""
            if metric is None
            else f", {metric_name} {metric:.4f} (best {stopper.best:.4f} @ {stopper.best_epoch})",
            seconds,
            cpu_seconds,
            f"{stats.events_per_second:,.0f}",
        )
        if stop:
            history.stopped_early = True
            history.stop_reason = STOP_EARLY
            log.info("%s: no %s gain for %d epochs, stopping", name, metric_name, stopper.patience)
            break
        if budget is not None and epoch < n_epochs and elapsed + longest > budget:
            history.stop_reason = STOP_BUDGET
            log.info(
                "%s: stopping after %d/%d epochs: %.1fs elapsed + %.1fs for the longest epoch "
                "would pass the %.0fs training budget (max_train_seconds)",
                name,
                epoch,
                n_epochs,
                elapsed,
                longest,
                budget,
            )
            break
    history.train_seconds = time.perf_counter() - loop_start
    if history.stop_reason == STOP_EPOCHS:
        log.info("%s: ran all %d epochs in %.1fs", name, n_epochs, history.train_seconds)
    if stopper is not None and stopper.best_state is not None:
        module.load_state_dict(stopper.best_state)
        history.best_epoch, history.best_metric = stopper.best_epoch, stopper.best
    module.eval()
    return history
