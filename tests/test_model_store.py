from __future__ import annotations

import pytest

from recsys_assets.core.models.store import ModelStore, ModelVersionNotFoundError


def test_versions_append_and_load_back(tmp_path):
    store = ModelStore(tmp_path / "w.duckdb")
    v1 = store.save("als", b"first", {"factors": 8}, info={"train_seconds": 1.5})
    v2 = store.save("als", b"second", {"factors": 16})
    v_other = store.save("popular", b"pop", {})
    assert (v1, v2, v_other) == (1, 2, 1)
    assert store.load("als").payload == b"second"
    old = store.load("als", version=1)
    assert old.payload == b"first" and old.params == {"factors": 8}
    assert old.info["train_seconds"] == 1.5
    store.set_metrics("als", 1, {"ndcg_at_10": 0.25})
    assert store.load("als", 1).metrics == {"ndcg_at_10": 0.25}
    versions = store.versions("als")
    assert versions["version"].to_list() == [2, 1]
    assert versions["size_bytes"].to_list() == [6, 5]
    # the newest record without the payload (model_metrics reads it)
    store.set_metrics("als", 2, {"ndcg_at_10": 0.5})
    latest = store.latest_record("als")
    assert latest["version"] == 2 and latest["size_bytes"] == 6
    assert latest["params"] == {"factors": 16} and latest["metrics"] == {"ndcg_at_10": 0.5}
    assert store.latest_record("als")["info"] == {}
    assert store.latest_record("popular")["version"] == 1
    with pytest.raises(ModelVersionNotFoundError, match="none stored"):
        store.latest_record("item_knn")


def test_missing_versions_are_clear_errors(tmp_path):
    store = ModelStore(tmp_path / "w.duckdb")
    with pytest.raises(ModelVersionNotFoundError, match="no model store|none stored"):
        store.load("als")
    store.save("als", b"x", {})
    with pytest.raises(ModelVersionNotFoundError, match=r"model 'als' has no stored version 7.*1"):
        store.load("als", version=7)
    with pytest.raises(ModelVersionNotFoundError, match="none stored"):
        store.load("item_knn")
    with pytest.raises(ModelVersionNotFoundError):
        store.set_metrics("als", 9, {})
