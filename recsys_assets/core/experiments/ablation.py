"""Ablation: variants of the registered models, trained and scored exactly as the models are.

A :class:`Variant` changes one thing of a base model: its parameters (over the model's defaults,
e.g. ItemKNN's ``k``) or what it learns from (the event types it is trained on, or every event
weighing 1 instead of the view / add-to-cart / purchase weights). Every row of the report is
trained on train+valid and scored top-20 over the full catalogue on the test split, already-seen
items excluded, with the metrics code of ``model_metrics`` (``ranking_metrics``), so a row is
comparable with the leaderboard; each model's ``base`` row (its defaults) is the reference of
its variants' deltas.

Cheap by default: the variants of the fast models (tier ``default``) on a seeded sample of the
test users, trained on those users and a seeded sample of the others (``max_train_users``):
every row of a report learns from the same users, so the deltas compare like with like, but
the absolute values sit below the leaderboard's (fewer users to learn co-occurrence from).
The Hybrid's and GRU4Rec's variants (tier ``slow``: each refits a network or a whole
stack of sources) and a few more (tier ``extra``) run when asked.

Pure code (no Dagster): the asset ``ablation_report`` calls :func:`run_ablation`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from recsys_assets.core.analytics.plots import new_figure
from recsys_assets.core.data.schemas import EVENT_TYPES
from recsys_assets.core.data.training_data import TrainingData, build_training_data
from recsys_assets.core.evaluation.holdout import EVAL_K, holdout_targets, recommend_lists
from recsys_assets.core.evaluation.metrics import METRIC_NAMES, ranking_metrics
from recsys_assets.core.models.hybrid import FEATURE_GROUPS as HYBRID_FEATURE_GROUPS

log = logging.getLogger(__name__)

FINAL_TRAINING_SPLITS = ("train", "valid")  # as the model assets: fit on these, score on test
BASE = "base"  # the variant name of a model's reference configuration
TIERS = ("default", "slow", "extra")
# The metrics each variant row is compared on (delta_<metric> = variant − base).
DELTA_METRICS = tuple(f"{m}_at_10" for m in METRIC_NAMES)
# The Hybrid's own candidate sources and the parameter that switches each off (0 candidates).
HYBRID_OWN_SOURCE_PARAMS = {
    "category_popular": "category_candidates",
    "trending": "trending_candidates",
}


@dataclass(frozen=True)
class Variant:
    """One configuration of a registered model; ``name`` ``base`` is the model's defaults.

    ``params`` are applied over the model's defaults (and any run-wide overrides);
    ``train_events`` restricts the training data to those event types (None: all);
    ``uniform_weights`` gives every event weight 1 (no view 1 / cart 3 / purchase 5).
    """

    model: str
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    train_events: tuple[str, ...] | None = None
    uniform_weights: bool = False
    tier: str = "default"
    description: str = ""

    def __post_init__(self) -> None:
        if self.tier not in TIERS:
            raise ValueError(f"variant {self.key}: tier must be one of {TIERS}, got {self.tier!r}")
        if self.train_events is not None:
            unknown = sorted(set(self.train_events) - set(EVENT_TYPES))
            if unknown or not self.train_events:
                raise ValueError(
                    f"variant {self.key}: train_events must be a non-empty subset of "
                    f"{EVENT_TYPES}, got {self.train_events!r}"
                )

    @property
    def key(self) -> str:
        """``model:name``, how a run config selects the variant."""
        return f"{self.model}:{self.name}"

    @property
    def is_base(self) -> bool:
        return self.name == BASE

    def changes(self) -> dict[str, Any]:
        """What differs from the base configuration (the report's ``changed_params``)."""
        out: dict[str, Any] = dict(self.params)
        if self.train_events is not None:
            out["train_events"] = list(self.train_events)
        if self.uniform_weights:
            out["event_weights"] = "uniform"
        return out

    def data_key(self) -> tuple[tuple[str, ...] | None, bool]:
        """Variants with equal keys learn from the same TrainingData (built once)."""
        return self.train_events, self.uniform_weights


def base_variant(model: str) -> Variant:
    return Variant(model, BASE, description="the model's default parameters, all events")


def default_variants(registered: Sequence[str]) -> list[Variant]:
    """The ablation spec for the models in ``registered`` (the registry's names, in order).

    Hybrid variants are derived from the registry: one per candidate source it would use (every
    registered model besides itself) and one per own source and feature group.
    """
    spec = [
        Variant(
            "als",
            "no_event_weights",
            uniform_weights=True,
            description="every event weighs 1 (views count as much as purchases)",
        ),
        Variant("item_knn", "k_10", {"k": 10}, description="10 neighbours per item"),
        Variant("item_knn", "k_200", {"k": 200}, description="200 neighbours per item"),
        Variant(
            "content_based",
            "no_ancestors",
            {"ancestor_weight": 0.0},
            description="item vectors of the leaf category only (no ancestor categories)",
        ),
        Variant(
            "gru4rec",
            "carts_and_purchases",
            train_events=("addtocart", "transaction"),
            tier="slow",
            description="trained on add-to-cart and purchase events only",
        ),
        # tier "extra": run with the complete report only
        Variant("als", "bm25", {"weighting": "bm25"}, tier="extra", description="BM25 weighting"),
        Variant(
            "item_knn",
            "plain_cosine",
            {"asymmetry": 0.5},
            tier="extra",
            description="symmetric cosine instead of P(j | i)",
        ),
        Variant(
            "content_based",
            "no_time_decay",
            {"half_life_days": None},
            tier="extra",
            description="no time decay of the category profile",
        ),
        Variant(
            "content_based",
            "no_popularity",
            {"popularity_weight": 0.0},
            tier="extra",
            description="no popularity within category",
        ),
        Variant(
            "popular",
            "last_7_days",
            {"window_days": 7},
            tier="extra",
            description="popularity over the last 7 days",
        ),
    ]
    if "hybrid" in registered:
        sources = [m for m in registered if m != "hybrid"]
        for source in sources:
            spec.append(
                Variant(
                    "hybrid",
                    f"without_{source}",
                    {"sources": [s for s in sources if s != source]},
                    tier="slow",
                    description=f"no {source} candidates or features",
                )
            )
        for source, param in HYBRID_OWN_SOURCE_PARAMS.items():
            spec.append(
                Variant(
                    "hybrid",
                    f"without_{source}",
                    {param: 0},
                    tier="slow",
                    description=f"no {source} candidates",
                )
            )
        for group in HYBRID_FEATURE_GROUPS:
            spec.append(
                Variant(
                    "hybrid",
                    f"without_{group}_features",
                    {"drop_feature_groups": [group]},
                    tier="slow",
                    description=f"the re-ranker never sees the {group} features",
                )
            )
    return [v for v in spec if v.model in registered]


def select_variants(
    spec: Sequence[Variant],
    *,
    tiers: Iterable[str] = ("default",),
    models: Iterable[str] | None = None,
    keys: Iterable[str] | None = None,
) -> list[Variant]:
    """The variants to run, each model's ``base`` first (added where missing).

    ``keys`` (``model:name``) picks variants by name whatever their tier; otherwise the variants
    of ``tiers``. ``models`` keeps only those base models. Unknown names are errors that list
    the valid ones.
    """
    tiers = list(tiers)
    bad_tiers = sorted(set(tiers) - set(TIERS))
    if bad_tiers:
        raise ValueError(f"tiers: unknown tier(s) {bad_tiers}; valid tiers: {list(TIERS)}")
    by_key = {v.key: v for v in spec}
    spec_models = list(dict.fromkeys(v.model for v in spec))
    if keys is not None:
        keys = list(keys)
        # a model's base row may be named even where the spec lists none (it is implied)
        valid = {*by_key, *(f"{m}:{BASE}" for m in spec_models)}
        unknown = sorted(set(keys) - valid)
        if unknown:
            raise ValueError(f"variants: unknown variant(s) {unknown}; valid: {sorted(valid)}")
        chosen = [by_key[k] for k in keys if k in by_key]
        chosen_models = [k.split(":", 1)[0] for k in keys]
    else:
        chosen = [v for v in spec if v.tier in tiers and not v.is_base]
        chosen_models = [v.model for v in chosen]
    if models is not None:
        models = list(models)
        unknown = sorted(set(models) - set(spec_models))
        if unknown:
            raise ValueError(
                f"models: no variants for {unknown}; models with variants: {spec_models}"
            )
        chosen = [v for v in chosen if v.model in models]
        chosen_models = [m for m in chosen_models if m in models]
    out: list[Variant] = []
    for model in dict.fromkeys(chosen_models):
        base = by_key.get(f"{model}:{BASE}", base_variant(model))
        out.append(base)
        out.extend(v for v in chosen if v.model == model and not v.is_base)
    return out


def variant_splits(splits: pl.DataFrame, variant: Variant) -> pl.DataFrame:
    """The interactions ``variant`` learns from (all splits; the caller picks train+valid)."""
    out = splits
    if variant.train_events is not None:
        out = out.filter(pl.col("event").is_in(list(variant.train_events)))
    if variant.uniform_weights:
        out = out.with_columns(pl.lit(1.0, dtype=splits.schema["weight"]).alias("weight"))
    return out


def evaluation_users(
    targets: pl.DataFrame, max_users: int | None, seed: int
) -> tuple[np.ndarray, pl.DataFrame]:
    """The sorted user ids scored (a seeded sample of at most ``max_users``) and their targets."""
    users = targets["user_id"].unique().sort()
    if max_users is not None and max_users > 0 and users.len() > max_users:
        users = users.sample(max_users, seed=seed).sort()
        targets = targets.join(users.to_frame(), on="user_id", how="semi")
    return users.to_numpy(), targets


def training_user_sample(
    splits: pl.DataFrame, scored: np.ndarray, max_train_users: int | None, seed: int
) -> pl.DataFrame:
    """The rows of ``splits`` of the scored users plus a seeded sample of the other users of
    train+valid, ``max_train_users`` in all (every user when None or when there are fewer)."""
    if max_train_users is None:
        return splits
    history_users = (
        splits.filter(pl.col("split").is_in(list(FINAL_TRAINING_SPLITS)))["user_id"]
        .cast(pl.Int64)
        .unique()
        .sort()
    )
    if history_users.len() <= max_train_users:
        return splits
    scored_series = pl.Series("user_id", scored, dtype=pl.Int64)
    others = history_users.filter(~history_users.is_in(scored_series.implode()))
    n_others = max(0, min(others.len(), max_train_users - scored_series.len()))
    keep = pl.concat([scored_series, others.sample(n_others, seed=seed)])
    return splits.filter(pl.col("user_id").cast(pl.Int64).is_in(keep.implode()))


def run_ablation(
    variants: Sequence[Variant],
    splits: pl.DataFrame,
    item_catalog: pl.DataFrame,
    category_tree: pl.DataFrame,
    *,
    max_users: int | None = 2000,
    max_train_users: int | None = None,
    seed: int = 0,
    model_params: Mapping[str, Mapping[str, Any]] | None = None,
    create_model: Callable[[str, dict[str, Any]], Any] | None = None,
    tuning_context: Callable[[str], Any] | None = None,
    on_row: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> pl.DataFrame:
    """Train and score every variant; one row each, with deltas against its model's base.

    ``max_train_users`` (None: all) caps the users trained on: the scored users plus a seeded
    sample of the others, with their whole train+valid history; the items stay the whole
    catalogue. ``model_params`` are run-wide overrides per model (applied to the base and its
    variants alike, e.g. fewer epochs in a quick run). ``create_model`` / ``tuning_context``
    default to
    the registry's; inside a model's ``tuning_context`` its variants may share work (the Hybrid
    reuses the sources fitted for its base). ``on_row(i, n, row)`` sees each finished row.
    A variant that cannot be trained on its data (ValueError) gets a row with its ``error``.
    """
    from recsys_assets.core.models.registry import MODEL_REGISTRY
    from recsys_assets.core.models.registry import create_model as registry_create

    make = create_model or registry_create
    context = tuning_context or (lambda name: MODEL_REGISTRY[name].tuning_context())
    model_params = {k: dict(v) for k, v in (model_params or {}).items()}
    bases = {v.model for v in variants if v.is_base}
    missing = sorted({v.model for v in variants} - bases)
    if missing:
        raise ValueError(f"variants: no base row for {missing} (use select_variants)")

    history = splits.filter(pl.col("split").is_in(list(FINAL_TRAINING_SPLITS)))
    targets = holdout_targets(splits, FINAL_TRAINING_SPLITS, "test")
    users, targets = evaluation_users(targets, max_users, seed)
    splits = training_user_sample(splits, users, max_train_users, seed)
    n_train_users = splits.filter(pl.col("split").is_in(list(FINAL_TRAINING_SPLITS)))[
        "user_id"
    ].n_unique()
    n_catalogue = item_catalog.height
    log.info(
        "ablation: %d configurations of %s on %d test users, trained on %d users",
        len(variants),
        sorted(bases),
        users.size,
        n_train_users,
    )
    data_cache: dict[tuple, TrainingData] = {}
    rows: list[dict[str, Any]] = []
    for model in dict.fromkeys(v.model for v in variants):
        with context(model):
            for variant in (v for v in variants if v.model == model):
                row = _run_variant(
                    variant,
                    splits,
                    history,
                    item_catalog,
                    category_tree,
                    users,
                    targets,
                    n_catalogue,
                    model_params.get(model, {}),
                    make,
                    data_cache,
                )
                row["train_users"] = n_train_users
                rows.append(row)
                if on_row is not None:
                    on_row(len(rows), len(variants), row)
    return add_deltas(_frame(rows))


def _run_variant(
    variant: Variant,
    splits: pl.DataFrame,
    history: pl.DataFrame,
    item_catalog: pl.DataFrame,
    category_tree: pl.DataFrame,
    users: np.ndarray,
    targets: pl.DataFrame,
    n_catalogue: int,
    overrides: Mapping[str, Any],
    make: Callable[[str, dict[str, Any]], Any],
    data_cache: dict[tuple, TrainingData],
) -> dict[str, Any]:
    params = {**overrides, **variant.params}
    row: dict[str, Any] = {
        "model": variant.model,
        "variant": variant.name,
        "tier": variant.tier,
        "changed_params": json.dumps(variant.changes(), sort_keys=True, default=str),
        "params": json.dumps(params, sort_keys=True, default=str),
        "description": variant.description,
        "error": None,
    }
    try:
        data = data_cache.get(variant.data_key())
        if data is None:
            data = build_training_data(
                variant_splits(splits, variant),
                item_catalog,
                category_tree,
                use_splits=FINAL_TRAINING_SPLITS,
            )
            data_cache[variant.data_key()] = data
        model = make(variant.model, params)
        start = time.perf_counter()
        model.fit(data)
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        lists = variant_lists(model, variant, users, history, data)
        summary, _ = ranking_metrics(
            lists.select("user_id", "rank", "item_id"),
            targets,
            ks=(10, 20),
            n_catalogue_items=n_catalogue,
        )
    except ValueError as error:
        log.warning("ablation: %s could not be trained or scored: %s", variant.key, error)
        row["error"] = str(error)
        return row
    row.update({k: float(v) for k, v in summary.items() if k != "users_evaluated"})
    row["users_evaluated"] = int(summary["users_evaluated"])
    # users the variant's training data does not know: it answers them with popularity
    row["fallback_users"] = int((data.user_index(users) < 0).sum())
    row["train_seconds"] = train_seconds
    row["score_seconds"] = time.perf_counter() - start
    return row


def variant_lists(
    model, variant: Variant, users: np.ndarray, history: pl.DataFrame, data: TrainingData
) -> pl.DataFrame:
    """Top-EVAL_K lists with the user's whole train+valid history excluded.

    A variant trained on fewer event types only knows part of a user's history, so its own
    ``exclude_seen`` would let already-seen items (never targets) into its lists: it asks for
    enough extra items to drop them, so every row excludes the same items.
    """
    if variant.train_events is None:
        return recommend_lists(model, users, variant.key, k=EVAL_K)
    seen = history.select(pl.col("user_id").cast(pl.Int64), pl.col("item_id").cast(pl.Int64))
    seen = seen.filter(pl.col("user_id").is_in(pl.Series(users))).unique()
    rows, cols = (
        data.user_index(seen["user_id"].to_numpy()),
        data.item_index(seen["item_id"].to_numpy()),
    )
    known = (rows >= 0) & (cols >= 0)
    in_model = np.zeros(seen.height, dtype=bool)
    if known.any():
        in_model[known] = np.asarray(data.user_item[rows[known], cols[known]]).ravel() > 0
    unseen_by_model = seen.filter(pl.Series(~in_model))
    extra = int(unseen_by_model.group_by("user_id").len()["len"].max() or 0)
    lists = recommend_lists(model, users, variant.key, k=min(EVAL_K + extra, data.n_items))
    return (
        lists.join(seen, on=["user_id", "item_id"], how="anti")
        .sort("user_id", "rank")
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over("user_id").alias("rank"))
        .filter(pl.col("rank") <= EVAL_K)
    )


_TEXT_COLUMNS = ("model", "variant", "tier", "changed_params", "params", "description", "error")
_METRIC_COLUMNS = (
    *(f"{m}_at_{k}" for k in (10, 20) for m in METRIC_NAMES),
    f"coverage_at_{EVAL_K}",
)


def _row_schema() -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {c: pl.Utf8 for c in _TEXT_COLUMNS}
    schema.update({c: pl.Float64 for c in _METRIC_COLUMNS})
    schema.update(
        users_evaluated=pl.Int64,
        train_users=pl.Int64,
        fallback_users=pl.Int64,
        train_seconds=pl.Float64,
        score_seconds=pl.Float64,
    )
    return schema


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    schema = _row_schema()
    return pl.DataFrame([{c: r.get(c) for c in schema} for r in rows], schema=schema)


def add_deltas(table: pl.DataFrame) -> pl.DataFrame:
    """``delta_<metric>`` = the row's metric − its model's ``base`` row's, for DELTA_METRICS,
    and ``relative_delta_ndcg_at_10`` = that delta / the base's NDCG@10 (NaN where undefined)."""
    base = table.filter(pl.col("variant") == BASE).select(
        "model", *[pl.col(m).alias(f"_base_{m}") for m in DELTA_METRICS]
    )
    out = table.join(base, on="model", how="left", maintain_order="left")
    out = out.with_columns(
        *[(pl.col(m) - pl.col(f"_base_{m}")).alias(f"delta_{m}") for m in DELTA_METRICS],
        pl.when(pl.col("_base_ndcg_at_10") > 0)
        .then((pl.col("ndcg_at_10") - pl.col("_base_ndcg_at_10")) / pl.col("_base_ndcg_at_10"))
        .otherwise(None)
        .alias("relative_delta_ndcg_at_10"),
    )
    return out.drop([f"_base_{m}" for m in DELTA_METRICS]).fill_nan(None)


def summary_table(report: pl.DataFrame) -> pl.DataFrame:
    """The columns a person reads first (the asset's markdown table)."""
    return report.select(
        "model",
        "variant",
        "changed_params",
        "ndcg_at_10",
        "delta_ndcg_at_10",
        "relative_delta_ndcg_at_10",
        "recall_at_10",
        "delta_recall_at_10",
        "hit_rate_at_10",
        "delta_hit_rate_at_10",
        "train_seconds",
        "users_evaluated",
        "train_users",
    )


def plot_deltas(report: pl.DataFrame, metric: str = "ndcg_at_10") -> Figure:
    """Horizontal bars: each variant's change of ``metric`` against its model's base, in % of
    the base (bars) with the absolute delta written beside each bar."""
    rows = report.filter((pl.col("variant") != BASE) & pl.col(f"delta_{metric}").is_not_null())
    labels = [f"{m}: {v}" for m, v in zip(rows["model"], rows["variant"], strict=True)]
    base = rows[metric] - rows[f"delta_{metric}"]
    rel = np.where(
        base.to_numpy() > 0, 100 * rows[f"delta_{metric}"].to_numpy() / base.to_numpy(), 0.0
    )
    fig = new_figure(7, 0.9 + 0.3 * max(len(labels), 1))
    ax = fig.subplots()
    ax.set_title(f"Ablation: change of {metric} against each model's base configuration")
    if labels:
        colors = np.where(rel >= 0, "#55a868", "#c44e52")
        y = np.arange(len(labels))
        ax.barh(y, rel, color=colors)
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        for yi, r, d in zip(y, rel, rows[f"delta_{metric}"].to_numpy(), strict=True):
            ax.annotate(
                f"{d:+.4f}",
                (r, yi),
                xytext=(3 if r >= 0 else -3, 0),
                textcoords="offset points",
                ha="left" if r >= 0 else "right",
                va="center",
                fontsize=8,
            )
        span = max(float(np.abs(rel).max()), 1.0)
        ax.set_xlim(-1.3 * span, 1.3 * span)
    else:
        ax.text(0.5, 0.5, "no variant was scored", ha="center", va="center")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"{metric}: % change against the base")
    return fig


def parse_model_params(text: str, registered: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{"model": {param: value}}`` from the ``model_params_json`` config (see the registry)."""
    from recsys_assets.core.models.registry import parse_params_json

    return parse_params_json(text, registered, field="model_params_json")
