"""Progress inside long steps: lines from pure code and from assets, and where they end up.

Pure code logs through ``logging.getLogger(__name__)``; ``dagster.yaml`` makes Dagster manage the
``recsys_assets`` loggers, so those lines land in the run's event log (the UI) too.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from dagster import DagsterInstance, asset, materialize

from recsys_assets.core.data.schemas import (
    CATEGORY_TREE_TABLE_SCHEMA,
    ITEM_CATALOG_SCHEMA,
    SPLITS_SCHEMA,
)
from recsys_assets.core.data.training_data import build_training_data
from recsys_assets.core.evaluation.holdout import recommend_lists
from recsys_assets.core.models.registry import create_model
from recsys_assets.core.progress import Progress
from recsys_assets.core.serving_bundle import BundleLimits, PublishedModel, build_bundle

REPO = Path(__file__).resolve().parents[1]
N_USERS, N_ITEMS = 7, 12


def small_frames() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Seven users, twelve items in two categories, three train events and one test event each."""
    rng = np.random.default_rng(3)
    n = N_USERS * 4
    user = np.repeat(np.arange(N_USERS), 4)
    splits = pl.DataFrame(
        {
            "user_id": 100 + user,
            "item_id": 1 + rng.integers(0, N_ITEMS, n),
            "event": "view",
            "timestamp": 1_431_000_000_000 + np.arange(n) * 60_000,
            "transaction_id": None,
            "weight": 1.0,
            "session_id": user,
            "split": np.where(np.arange(n) % 4 == 3, "test", "train"),
        }
    ).cast(SPLITS_SCHEMA)
    items = np.arange(1, N_ITEMS + 1)
    catalog = pl.DataFrame(
        {
            "item_id": items,
            "category_id": 10 + items % 2,
            "root_category_id": 1,
            "price": 9.5,
            "available": 1,
            "as_of": 0,
        }
    ).cast(ITEM_CATALOG_SCHEMA)
    tree = pl.DataFrame(
        {
            "category_id": [1, 10, 11],
            "parent_id": [None, 1, 1],
            "depth": [0, 1, 1],
            "root_id": [1, 1, 1],
            "ancestors": [[1], [10, 1], [11, 1]],
        }
    ).cast(CATEGORY_TREE_TABLE_SCHEMA)
    return splits, catalog, tree


@pytest.fixture(scope="module")
def frames():
    return small_frames()


@pytest.fixture(scope="module")
def popular(frames):
    return create_model("popular", {}).fit(build_training_data(*frames))


def _messages(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def test_progress_is_rate_limited_and_ends_at_the_total(caplog):
    log = logging.getLogger("recsys_assets.test_progress")
    caplog.set_level(logging.INFO, logger=log.name)
    every = Progress(log, "scored", 120_000, "users", every_seconds=0)
    for done in (40_000, 80_000, 120_000):
        every.update(done)
    lines = _messages(caplog, log.name)
    assert [line.split(" (")[0] for line in lines] == [
        "scored 40,000/120,000 users",
        "scored 80,000/120,000 users",
        "scored 120,000/120,000 users",
    ]
    assert all(line.endswith(" s)") for line in lines)

    caplog.clear()
    quiet = Progress(log, "scored", 3, "users", every_seconds=3600)
    for done in (1, 2, 3):
        quiet.update(done)
    assert _messages(caplog, log.name) == []  # a short loop stays silent


def test_scoring_batches_log_progress(caplog, popular):
    caplog.set_level(logging.INFO, logger="recsys_assets.core.evaluation.holdout")
    users = np.arange(100, 100 + N_USERS)
    lists = recommend_lists(popular, users, "popular", k=5, batch_size=3, log_every_seconds=0)
    assert lists["user_id"].n_unique() == N_USERS
    lines = [m.split(" (")[0] for m in _messages(caplog, "recsys_assets.core.evaluation.holdout")]
    assert lines == [
        "popular: scored 3/7 users",
        "popular: scored 6/7 users",
        "popular: scored 7/7 users",
    ]


def test_bundle_building_logs_each_model(caplog, frames, popular):
    caplog.set_level(logging.INFO, logger="recsys_assets.core.serving_bundle")
    splits, catalog, _ = frames
    models = {"popular": PublishedModel(popular, 1, "2015-05-03", {}, {})}
    build_bundle(models, splits, catalog, "popular", limits=BundleLimits(top_n=5))
    lines = _messages(caplog, "recsys_assets.core.serving_bundle")
    assert (
        lines[0] == f"bundle popular: personal top-5 lists for {N_USERS} of {N_USERS} known users"
    )
    assert lines[-1].startswith(f"bundle popular: {N_USERS} user lists and 0 neighbour lists in ")


def _instance_home(tmp_path: Path, python_logs: bool) -> Path:
    """A DAGSTER_HOME holding the repository's dagster.yaml (or that file minus python_logs)."""
    import yaml

    home = tmp_path / ("home" if python_logs else "home-without-python-logs")
    home.mkdir()
    if python_logs:
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    else:
        config = yaml.safe_load((REPO / "dagster.yaml").read_text())
        config.pop("python_logs", None)
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def _run_log(home: Path, assets: list) -> list[str]:
    with DagsterInstance.from_config(str(home)) as instance:
        result = materialize(assets, instance=instance)
        assert result.success
        records = instance.all_logs(result.run_id)
    return [r.user_message for r in records if not r.is_dagster_event]


@pytest.mark.parametrize("python_logs", [True, False])
def test_core_progress_reaches_the_dagster_event_log(tmp_path, frames, popular, python_logs):
    """With the repository's dagster.yaml, a pure-code logger's lines are in the run's event log."""

    @asset
    def scored_lists(context) -> None:
        users = np.arange(100, 100 + N_USERS)
        recommend_lists(popular, users, "popular", k=5, batch_size=4, log_every_seconds=0)

    messages = _run_log(_instance_home(tmp_path, python_logs), [scored_lists])
    core = [m for m in messages if m.startswith("popular: scored")]
    if python_logs:
        assert [m.split(" (")[0] for m in core] == [
            "popular: scored 4/7 users",
            "popular: scored 7/7 users",
        ]
    else:  # the setting is what carries them: without it Dagster never sees these lines
        assert core == []


def test_tuning_logs_one_line_per_trial(tmp_path):
    """The tuned_params callback on a real Optuna study, inside a real Dagster run."""
    import optuna

    from recsys_assets.defs.models.assets import _trial_logger

    @asset
    def study(context) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        s = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
        s.optimize(
            lambda t: t.suggest_float("x", 0, 1),
            n_trials=3,
            callbacks=[_trial_logger(context, 3)],
        )

    messages = _run_log(_instance_home(tmp_path, True), [study])
    trials = [m for m in messages if m.startswith("trial ")]
    assert [m.split(" ndcg")[0] for m in trials] == ["trial 1/3", "trial 2/3", "trial 3/3"]
    for line in trials:
        value = re.fullmatch(r"trial \d/3 ndcg@10=(\d\.\d{4}) \(\d+\.\d s\)", line)
        assert value and 0 <= float(value.group(1)) <= 1, line
