"""The shared torch training helper, the model package's import structure, and fit logging."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from test_models import planted_frames

from recsys_assets.core.data.training_data import build_training_data
from recsys_assets.core.models import create_model
from recsys_assets.core.models.torch_training import (
    EarlyStopping,
    available_cores,
    choose_device,
    seed_everything,
    shuffled_batches,
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


def test_fit_logs_progress(caplog):
    data = build_training_data(*planted_frames(n_users=60))
    with caplog.at_level(logging.INFO, logger="recsys_assets"):
        create_model("als", {"iterations": 2}).fit(data)
        create_model("item_knn").fit(data)
    text = caplog.text
    assert "als: iteration 1/2" in text and "als: iteration 2/2" in text
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
