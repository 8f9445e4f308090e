"""Stored models deserialised once per run (core/models/run_models.py)."""

from __future__ import annotations

import numpy as np
import pytest
from test_models import planted_frames

from recsys_assets.core.data.training_data import build_training_data
from recsys_assets.core.models import create_model, run_models
from recsys_assets.core.models.run_models import forget, load_for_run
from recsys_assets.core.models.store import ModelStore


@pytest.fixture(scope="module")
def data():
    return build_training_data(*planted_frames())


class CountingStore(ModelStore):
    """A real store that counts the loads that read a model's bytes."""

    payload_reads = 0

    def load(self, model, version=None, payload=True):
        self.payload_reads += bool(payload)
        return super().load(model, version, payload)


def test_one_deserialisation_per_version_and_run(tmp_path, data):
    store = CountingStore(tmp_path / "w.duckdb")
    model = create_model("popular").fit(data)
    store.save("popular", model.to_bytes(), dict(model.params))
    first_record, first = load_for_run(store, "popular", None, "run-a")
    again_record, again = load_for_run(store, "popular", 1, "run-a")
    assert again is first and store.payload_reads == 1
    assert first_record.version == again_record.version == 1
    # the record is read afresh: metrics attached after the first load are seen
    store.set_metrics("popular", 1, {"ndcg_at_10": 0.5})
    record, same = load_for_run(store, "popular", None, "run-a")
    assert same is first and record.metrics == {"ndcg_at_10": 0.5}
    assert store.payload_reads == 1
    # the loaded model answers as the one that was stored
    users = data.user_ids[:5]
    np.testing.assert_array_equal(
        first.recommend(users, 10).item_ids, model.recommend(users, 10).item_ids
    )
    # another run deserialises again and drops the first run's objects
    _, other = load_for_run(store, "popular", None, "run-b")
    assert other is not first and store.payload_reads == 2
    assert len(run_models._RUN["models"]) == 1
    forget()
    assert run_models._RUN["models"] == {}


def test_a_new_store_at_the_same_path_is_not_mistaken_for_the_old(tmp_path, data):
    """A test (or bench) that deletes its warehouse restarts at version 1: the file is the
    same, the model is not. Another run id, or forget() after a run, keeps them apart."""
    path = tmp_path / "w.duckdb"
    store = ModelStore(path)
    small = create_model("popular").fit(data)
    store.save("popular", small.to_bytes(), dict(small.params))
    _, first = load_for_run(store, "popular", None, "run-a")
    forget()
    path.unlink()
    store = ModelStore(path)
    store.save("popular", small.to_bytes(), dict(small.params))  # version 1 again
    _, second = load_for_run(store, "popular", None, "run-a")
    assert second is not first


def test_a_load_outside_a_run_is_not_kept(tmp_path, data):
    forget()
    store = CountingStore(tmp_path / "w.duckdb")
    model = create_model("popular").fit(data)
    store.save("popular", model.to_bytes(), dict(model.params))
    _, first = load_for_run(store, "popular", None, None)
    _, second = load_for_run(store, "popular", None, None)
    assert first is not second and store.payload_reads == 2
    assert run_models._RUN["models"] == {}


def test_the_io_manager_outside_a_run_keeps_nothing(tmp_path, data):
    """``Definitions.load_asset_value`` and friends load without a run: the model is
    deserialised for that call and nothing stays cached afterwards."""
    from dagster import AssetKey, DagsterType, StaticPartitionsDefinition, build_input_context

    from recsys_assets.io_managers import ModelStoreIOManager

    forget()
    io = ModelStoreIOManager(database=str(tmp_path / "w.duckdb"))
    model = create_model("popular").fit(data)
    io.store.save("popular", model.to_bytes(), dict(model.params))
    context = build_input_context(
        asset_key=AssetKey("trained_model"),
        partition_key="popular",
        asset_partitions_def=StaticPartitionsDefinition(["popular"]),
        dagster_type=DagsterType(lambda _, value: True, name="TrainedModel", typing_type=object),
    )
    first, second = io.load_input(context), io.load_input(context)
    assert first.version == second.version == 1 and first.model is not second.model
    users = data.user_ids[:5]
    np.testing.assert_array_equal(
        first.model.recommend(users, 10).item_ids, model.recommend(users, 10).item_ids
    )
    assert run_models._RUN["models"] == {}
