"""Stored models deserialised once per run: the model store's versions as loaded objects.

One Dagster run of the Hybrid loads its six sources in ``trained_model`` (to fit on them) and
again in ``eval_recommendations`` (the stored Hybrid refers to them by version): at scale 1.0
that is ~18 s of blob reads and ~8 s of unpickling, twice. A stored version never changes, so
the second load can take the object the first one made.

The objects are kept for one run only (``run_id``): a process that runs one Dagster run after
another (a worker of ``make run``) must not carry one run's models, and their memory, into the
next; ``forget`` lets them go as soon as a run ends. Keyed by the store's file and table as well,
so two stores (or a test's fresh file that restarts at version 1) never share an entry.
"""

from __future__ import annotations

from typing import Any

from recsys_assets.core.models.store import ModelStore, StoredModel

_RUN: dict[str, Any] = {"run_id": None, "models": {}}


def load_for_run(
    store: ModelStore, model: str, version: int | None, run_id: str | None
) -> tuple[StoredModel, Any]:
    """The stored record of ``model`` (its given version, or the latest) and the model itself,
    deserialised at most once in ``run_id`` (every time when it is None: a load outside a
    run). The record is always read afresh (without its payload when the model is already
    loaded): metrics are attached to a version after it is stored."""
    from recsys_assets.core.models.registry import model_from_bytes

    if run_id is None:
        record = store.load(model, version)
        return record, model_from_bytes(record.model, record.payload)
    if _RUN["run_id"] != run_id:
        forget()
        _RUN["run_id"] = run_id
    models: dict[tuple[str, str, str, int], Any] = _RUN["models"]
    record = store.load(model, version, payload=False)
    key = (store.database, store.table, record.model, record.version)
    if key not in models:
        record = store.load(model, record.version)
        models[key] = model_from_bytes(record.model, record.payload)
    return record, models[key]


def forget() -> None:
    """Let go of every model loaded in the current run (called when a run ends)."""
    _RUN["models"] = {}
    _RUN["run_id"] = None
