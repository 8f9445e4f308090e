"""Contract checks of a serving bundle and of an A/B experiment (ValueError naming the field)."""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from recsys_serving.bundle import GruWeights, ServingBundle
from recsys_serving.gru_forward import check_weights
from recsys_serving.redis_layout.codec import MAX_LIST_LENGTH

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


# --- validation -----------------------------------------------------------------------------------
def validate_experiment(exp: dict | None, models: Iterable[str], where: str) -> dict | None:
    """Check an A/B experiment against the published model names; returns a clean copy."""
    if exp is None:
        return None
    names = set(models)
    missing = {"name", "control", "treatment", "treatment_share"} - set(exp)
    if missing:
        raise ValueError(f"{where}: missing field(s) {sorted(missing)}")
    for arm in ("control", "treatment"):
        if exp[arm] not in names:
            raise ValueError(
                f"{where}.{arm}: model {exp[arm]!r} is not published ({sorted(names)})"
            )
    share = exp["treatment_share"]
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise ValueError(f"{where}.treatment_share: must be a number in [0, 1], got {share!r}")
    if not isinstance(exp["name"], str) or not exp["name"]:
        raise ValueError(f"{where}.name: must be a non-empty string")
    return {
        "name": exp["name"],
        "control": exp["control"],
        "treatment": exp["treatment"],
        "treatment_share": float(share),
    }


def _check_lists(where: str, ids, items, scores) -> None:
    if ids is None or items is None or scores is None:
        raise ValueError(f"{where}: ids, items and scores must all be given")
    if items.ndim != 2 or items.shape != scores.shape or len(ids) != len(items):
        raise ValueError(
            f"{where}: want ids (n,), items and scores (n, N); got {ids.shape}, "
            f"{items.shape}, {scores.shape}"
        )
    if items.shape[1] > MAX_LIST_LENGTH:
        raise ValueError(f"{where}: lists longer than {MAX_LIST_LENGTH} are not supported")
    if items.size and items.min() < -1:
        row = int(np.flatnonzero((items < -1).any(axis=1))[0])
        raise ValueError(f"{where}: negative item id in row {row} (only -1 pads)")
    pad_gap = (items[:, :-1] < 0) & (items[:, 1:] >= 0)
    if pad_gap.any():
        row = int(np.flatnonzero(pad_gap.any(axis=1))[0])
        raise ValueError(f"{where}: row {row} (id {int(ids[row])}) has an item after -1 padding")
    if len(ids) and (ids.min() < 0 or len(np.unique(ids)) != len(ids)):
        raise ValueError(f"{where}: ids must be unique and non-negative")


def _check_gru(where: str, gru: GruWeights) -> None:
    n_items = check_weights(gru.arrays, f"{where}.arrays")
    ids = np.asarray(gru.item_ids)
    if ids.shape != (n_items,) or ids.dtype.kind not in "iu":
        raise ValueError(
            f"{where}.item_ids: want {n_items} integer ids, got {ids.dtype} {ids.shape}"
        )
    if n_items and (ids.min() < 0 or len(np.unique(ids)) != n_items):
        raise ValueError(f"{where}.item_ids: ids must be unique and non-negative")


def validate_bundle(bundle: ServingBundle) -> None:
    """Raise ValueError naming the model and field of the first contract violation."""
    if not bundle.models:
        raise ValueError("bundle.models: at least one model is needed")
    names = bundle.model_names
    if len(set(names)) != len(names):
        raise ValueError(f"bundle.models: duplicate model names {names}")
    for m in bundle.models:
        if not _NAME_RE.match(m.name):
            raise ValueError(f"model name {m.name!r}: use letters, digits, '_', '.', '-'")
        _check_lists(f"models[{m.name}].user_ids/items/scores", m.user_ids, m.items, m.scores)
        if m.similar_items is not None or m.similar_item_ids is not None:
            _check_lists(
                f"models[{m.name}].similar_item_ids/similar_items/similar_scores",
                m.similar_item_ids,
                m.similar_items,
                m.similar_scores,
            )
        if m.gru is not None:
            _check_gru(f"models[{m.name}].gru", m.gru)
    if bundle.default_model not in names:
        raise ValueError(f"bundle.default_model: {bundle.default_model!r} not in {names}")
    validate_experiment(bundle.ab_experiment, names, "bundle.ab_experiment")
    n_hist = len(bundle.history_user_ids)
    if len(bundle.history_indptr) != n_hist + 1:
        raise ValueError("bundle.history_indptr: must have len(history_user_ids) + 1 entries")
    n_ev = int(bundle.history_indptr[-1]) if n_hist else 0
    for name in ("history_items", "history_events", "history_timestamps"):
        if len(getattr(bundle, name)) < n_ev:
            raise ValueError(f"bundle.{name}: shorter than history_indptr[-1] = {n_ev}")
    if n_hist and len(np.unique(bundle.history_user_ids)) != n_hist:
        raise ValueError("bundle.history_user_ids: must be unique")
    n_items = len(bundle.item_ids)
    for name in ("item_category", "item_price", "item_available"):
        if len(getattr(bundle, name)) != n_items:
            raise ValueError(f"bundle.{name}: length differs from item_ids ({n_items})")
    if len(np.unique(bundle.item_ids)) != n_items:
        raise ValueError("bundle.item_ids: must be unique")
    tree, parents = np.asarray(bundle.category_ids), np.asarray(bundle.category_parents)
    if tree.shape != parents.shape or tree.ndim != 1:
        raise ValueError("bundle.category_ids/category_parents: want two arrays of one length")
    if len(np.unique(tree)) != len(tree):
        raise ValueError("bundle.category_ids: must be unique")
    if len(bundle.popular_items) != len(bundle.popular_scores):
        raise ValueError("bundle.popular_items/popular_scores: lengths differ")
    for cat, (it, sc) in bundle.popular_by_category.items():
        if len(it) != len(sc):
            raise ValueError(f"bundle.popular_by_category[{cat}]: items and scores lengths differ")
