"""The shared torch training helper, the model package's import structure, and fit logging."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from test_models import planted_frames

from recsys_assets.core.cpu import available_cores
from recsys_assets.core.data.training_data import build_training_data
from recsys_assets.core.models import create_model, torch_training
from recsys_assets.core.models.torch_training import (
    STOP_BUDGET,
    STOP_EARLY,
    STOP_EPOCHS,
    EarlyStopping,
    check_budget,
    choose_device,
    seed_everything,
    shuffled_batches,
    torch_threads,
    train_epochs,
)


def test_model_modules_do_not_import_each_other():
    # The package __init__ imports every model, so sys.modules cannot show a circle; the
    # modules' own import statements (module level and inside functions) can.
    import ast
    from pathlib import Path

    import recsys_assets.core.models as pkg

    root = Path(pkg.__file__).parent
    for name, forbidden in {
        "base.py": ("registry", "als", "item_knn", "popularity", "content_based"),
        "item_knn.py": ("als", "registry"),
        "als.py": ("item_knn", "registry"),
    }.items():
        tree = ast.parse((root / name).read_text())
        imported = {
            node.module.rsplit(".", 1)[-1]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }
        assert not imported & set(forbidden), (name, imported & set(forbidden))


def test_generic_from_bytes_and_registry_load_model():
    from recsys_assets.core.models.base import Recommender
    from recsys_assets.core.models.registry import load_model

    data = build_training_data(*planted_frames(n_users=60))
    blob = create_model("item_knn").fit(data).to_bytes()
    assert type(load_model(blob)).name == "item_knn"
    assert type(Recommender.from_bytes(blob)).name == "item_knn"


def test_fit_logs_progress(caplog, monkeypatch):
    data = build_training_data(*planted_frames(n_users=60))
    with caplog.at_level(logging.INFO, logger="recsys_assets"):
        create_model("als", {"iterations": 3}).fit(data)
        create_model("item_knn").fit(data)
    text = caplog.text
    # a quick fit: one line, for the last iteration (a line every PROGRESS_SECONDS otherwise)
    assert "als: iteration 3/3" in text and "als: iteration 1/3" not in text
    from recsys_assets.core.models import als

    monkeypatch.setattr(als, "PROGRESS_SECONDS", 0.0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="recsys_assets"):
        create_model("als", {"iterations": 2}).fit(data)
    assert "als: iteration 1/2" in caplog.text and "als: iteration 2/2" in caplog.text
    text += caplog.text
    assert "item_knn: " in text and "neighbour pairs" in text
    assert "als: fitted in" in text


def test_seed_makes_torch_and_numpy_draws_repeat():
    a = seed_everything(5)
    ta = torch.rand(3)
    b = seed_everything(5)
    tb = torch.rand(3)
    assert torch.equal(ta, tb)
    assert a.integers(1 << 30) == b.integers(1 << 30)


def test_choose_device_sets_cpu_threads():
    before = torch.get_num_threads()
    try:
        dev = choose_device("cpu", 1)
        assert dev.type == "cpu" and torch.get_num_threads() == 1
        choose_device("cpu", 0)
        assert torch.get_num_threads() == available_cores()
        with pytest.raises(ValueError, match="device"):
            choose_device("tpu")
        if not torch.cuda.is_available():
            assert choose_device("auto").type == "cpu"
            with pytest.raises(ValueError, match="cuda"):
                choose_device("cuda")
    finally:
        torch.set_num_threads(before)


def test_shuffled_batches_cover_once():
    batches = list(shuffled_batches(10, 3, np.random.default_rng(0)))
    assert [b.size for b in batches] == [3, 3, 3, 1]
    assert sorted(np.concatenate(batches)) == list(range(10))


def test_train_epochs_stops_early_and_restores_the_best(caplog):
    module = torch.nn.Linear(1, 1)
    metrics = iter([0.1, 0.5, 0.4, 0.3, 0.2, 0.9])
    weights_at = {}

    def run_epoch(epoch):
        with torch.no_grad():
            module.weight.fill_(float(epoch))
        weights_at[epoch] = float(module.weight.detach())
        return 1.0 / epoch, 100

    with caplog.at_level(logging.INFO, logger="recsys_assets"):
        history = train_epochs(
            "toy", module, 10, run_epoch, lambda: next(metrics), patience=3, metric_name="ndcg@10"
        )
    assert [e.epoch for e in history.epochs] == [1, 2, 3, 4, 5]
    assert history.stopped_early and history.best_epoch == 2 and history.best_metric == 0.5
    assert float(module.weight.detach()) == weights_at[2]  # best weights restored
    assert "toy: epoch 2/10" in caplog.text and "ndcg@10 0.5000" in caplog.text
    assert "events/s" in caplog.text


def test_train_epochs_rejects_nan_loss():
    with pytest.raises(ValueError, match="epoch 1"):
        train_epochs("toy", torch.nn.Linear(1, 1), 3, lambda e: (float("nan"), 1))


def test_early_stopping_min_delta():
    stopper = EarlyStopping(patience=1, min_delta=0.1)
    m = torch.nn.Linear(1, 1)
    assert not stopper.update(1, 0.5, m)
    assert stopper.update(2, 0.55, m)  # not enough gain


class _FakeClock:
    """Stands in for ``torch_training.time``: epochs advance it by chosen amounts."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def process_time(self) -> float:
        return self.now


def _timed_epochs(clock: _FakeClock, durations: list[float]):
    def run_epoch(epoch):
        clock.now += durations[epoch - 1]
        return 1.0, 10

    return run_epoch


def test_budget_stops_before_an_epoch_that_would_pass_it(monkeypatch, caplog):
    clock = _FakeClock()
    monkeypatch.setattr(torch_training, "time", clock)
    module = torch.nn.Linear(1, 1)
    with caplog.at_level(logging.INFO, logger="recsys_assets"):
        # 10 s, then 30 s: after epoch 2, 40 s elapsed + 30 s (longest) > 65 s
        history = train_epochs(
            "toy", module, 10, _timed_epochs(clock, [10, 30, 5, 5]), max_train_seconds=65
        )
    assert [e.epoch for e in history.epochs] == [1, 2]
    assert history.stop_reason == STOP_BUDGET and not history.stopped_early
    assert history.train_seconds == 40 and history.max_train_seconds == 65
    assert history.as_dict()["stop_reason"] == "budget"
    assert "toy: stopping after 2/10 epochs" in caplog.text and "training budget" in caplog.text

    # exactly at the budget is still allowed: 10 + 10 (elapsed) + 10 (longest) == 30
    clock.now = 0.0
    history = train_epochs(
        "toy", module, 10, _timed_epochs(clock, [10, 10, 10, 10]), max_train_seconds=30
    )
    assert len(history.epochs) == 3 and history.stop_reason == STOP_BUDGET


def test_budget_counts_validation_in_the_longest_epoch(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(torch_training, "time", clock)
    metrics = iter([0.1, 0.2, 0.3, 0.4])

    def validate():
        clock.now += 20  # validation as slow as the epoch itself
        return next(metrics)

    history = train_epochs(
        "toy",
        torch.nn.Linear(1, 1),
        4,
        _timed_epochs(clock, [20, 20, 20, 20]),
        validate,
        max_train_seconds=100,
    )
    # 40 s per epoch with validation: 40 + 40 <= 100, then 80 + 40 > 100
    assert len(history.epochs) == 2 and history.stop_reason == STOP_BUDGET
    assert history.best_epoch == 2


def test_budget_always_runs_one_epoch_and_reports_other_reasons(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(torch_training, "time", clock)
    module = torch.nn.Linear(1, 1)
    history = train_epochs("toy", module, 5, _timed_epochs(clock, [50] * 5), max_train_seconds=1)
    assert len(history.epochs) == 1 and history.stop_reason == STOP_BUDGET
    # a budget that is never reached: all epochs, reason "epochs" (also without a budget)
    for budget in (1000, None):
        history = train_epochs(
            "toy", module, 3, _timed_epochs(clock, [1, 1, 1]), max_train_seconds=budget
        )
        assert len(history.epochs) == 3 and history.stop_reason == STOP_EPOCHS
    # the budget spent exactly by the last epoch: that epoch ends the loop as "epochs"
    history = train_epochs("toy", module, 2, _timed_epochs(clock, [5, 5]), max_train_seconds=10)
    assert len(history.epochs) == 2 and history.stop_reason == STOP_EPOCHS
    metrics = iter([0.5, 0.1, 0.1])
    history = train_epochs(
        "toy", module, 9, _timed_epochs(clock, [1] * 9), lambda: next(metrics), patience=2
    )
    assert history.stop_reason == STOP_EARLY and history.stopped_early


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf"), "60", True])
def test_budget_must_be_a_positive_number(bad):
    with pytest.raises(ValueError, match="max_train_seconds"):
        check_budget(bad)
    with pytest.raises(ValueError, match="max_train_seconds"):
        train_epochs("toy", torch.nn.Linear(1, 1), 1, lambda e: (1.0, 1), max_train_seconds=bad)
    for name in ("ncf", "gru4rec"):
        with pytest.raises(ValueError, match="max_train_seconds"):
            create_model(name, {"max_train_seconds": bad})


@pytest.mark.parametrize("name", ["ncf", "gru4rec"])
def test_models_train_within_their_budget(name):
    data = build_training_data(*planted_frames(n_users=60))
    small = {"ncf": {"val_users": 20}, "gru4rec": {"layers": [16], "n_sample": 16}}[name]
    for budget in (1e-6, None):
        params = {**small, "n_epochs": 3, "num_threads": 1, "max_train_seconds": budget}
        model = create_model(name, params).fit(data)
        if budget is None:
            assert len(model.history.epochs) == 3
        else:  # a budget smaller than any epoch: exactly one, and the reason recorded
            assert len(model.history.epochs) == 1
            assert model.history.stop_reason == STOP_BUDGET
    assert "max_train_seconds" in create_model(name).default_params()


@pytest.mark.parametrize("name", ["ncf", "gru4rec"])
def test_models_train_with_their_threads_and_score_with_every_core(name, monkeypatch):
    """``num_threads`` is the training epochs' thread count only: a fitted or loaded model
    leaves the process with one thread per core, so the (users x items) scoring of the
    evaluation, and every later asset in the same Dagster process, is not single-threaded."""
    data = build_training_data(*planted_frames(n_users=60))
    small = {"ncf": {"val_users": 20}, "gru4rec": {"layers": [16], "n_sample": 16}}[name]
    seen: list[int] = []
    model = create_model(name, {**small, "n_epochs": 1, "num_threads": 1})
    run_epoch = type(model)._run_epoch

    def counting(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return run_epoch(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "_run_epoch", counting)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(available_cores())
        model.fit(data)
        assert seen == [1]
        assert torch.get_num_threads() == available_cores()
        torch.set_num_threads(1)  # as a model trained earlier in the process used to leave it
        type(model).from_bytes(model.to_bytes())
        assert torch.get_num_threads() == available_cores()
    finally:
        torch.set_num_threads(before)


def test_torch_threads_restores_the_count():
    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
        with torch_threads(0) as m:
            assert m == available_cores() == torch.get_num_threads()
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
