"""Recommenders: tuning, training, evaluation lists, metrics, the session protocol, the leaderboard.

Partitioned by model name (``popular``, ``als``, …): one run trains one model, and the model store
keeps every version. Final models train on train+valid and are scored on test; tuning trains on
train and is scored on valid, so the test split is never seen before the final evaluation.
"""

import json
import time
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    Config,
    IdentityPartitionMapping,
    MetadataValue,
    ResourceParam,
    SpecificPartitionsPartitionMapping,
    asset,
)
from dagster_mlflow.resources import MlFlow

from recsys_assets.core.data.training_data import (
    TrainingData,
    build_training_data,
    sample_users,
    training_data_from_bytes,
    training_data_to_bytes,
)
from recsys_assets.core.duckdb_retry import connect
from recsys_assets.core.evaluation.holdout import (
    EVAL_K,
    EVAL_LIST_K,
    available_only_metrics,
    evaluate,
    holdout_targets,
    recommend_lists,
    with_available_rank,
)
from recsys_assets.core.evaluation.metrics import ranking_metrics
from recsys_assets.core.evaluation.next_item import next_item_events
from recsys_assets.core.evaluation.next_item import session_metrics as session_protocol
from recsys_assets.core.models.registry import (
    MODEL_REGISTRY,
    create_model,
    get_model_class,
    parse_params_json,
)
from recsys_assets.core.models.store import ModelStore
from recsys_assets.defs.models.eval_lists import load_lists, matching, scored_lists
from recsys_assets.io_managers import MISSING_TABLE_IS_EMPTY, TrainedModel
from recsys_assets.metadata import frame_metadata, markdown_table
from recsys_assets.partitions import model_partitions
from recsys_assets.resources import ModelStoreResource
from recsys_assets.tracking import log_to_mlflow

GROUP = "models"
FINAL_TRAINING_SPLITS = ("train", "valid")
# The next-item protocol scores Popularity (its baseline) and every model that implements the
# protocol natively (``session_aware``: ItemKNN, GRU4Rec); the rest would answer with popularity.
SESSION_MODELS = ("popular", *(n for n, c in MODEL_REGISTRY.items() if c.session_aware))
# Evaluation needs only who saw what in which split: loading 3 of the 8 columns of `splits` saves
# seconds per asset at scale 1.0.
TARGET_COLUMNS = ["user_id", "item_id", "split"]
# A table of one model's rows (the IO manager rewrites `WHERE model = <partition>`) computed
# against the test targets. The per-model steps are in no pool (the "duckdb" pool's single
# slot would make models trained side by side take turns step by step): each holds the
# warehouse only while loading its inputs and storing its output, and its connections wait
# while another process holds the file (the IO manager retries for about 100 s, the model
# store: recsys_assets.core.duckdb_retry).
PER_MODEL_TEST_TABLE = dict(
    group_name=GROUP,
    partitions_def=model_partitions,
    metadata={"partition_expr": "model"},
    ins={"splits": AssetIn(metadata={"columns": TARGET_COLUMNS})},
    kinds={"duckdb", "polars"},
)


class ModelParamsConfig(Config):
    """Per-model parameter overrides, as JSON ``{"gru4rec": {"n_epochs": 2}}``, applied over
    the default, tuned or trial parameters of the models named. For quick runs (the test suite's
    pipeline); ``make run`` sets none."""

    params_json: str = "{}"

    def overrides(self, name: str) -> dict[str, Any]:
        table = parse_params_json(self.params_json, MODEL_REGISTRY, field="params_json")
        return dict(table.get(name, {}))


class TrainingDataConfig(Config):
    """How the tuning data is sampled: ``tuning_user_fraction`` of the users with train events
    (at least ``tuning_min_users``, at most ``tuning_max_users`` besides the users with
    validation targets, who are always in; all of them when there are fewer), seeded."""

    tuning_user_fraction: float = 0.25
    tuning_min_users: int = 20_000
    tuning_max_users: int = 100_000
    seed: int = 0


# The archives live in their own table of the warehouse, beside the model store's.
TRAINING_DATA_STORE_TABLE = "training_data_store"
# The model each tuning study chose, as fitted on the tuning archive: the Hybrid's tuning reuses
# them as its sources instead of fitting every model again (newest version per model kept).
TUNING_FITS_TABLE = "tuning_fits"
TUNING_DATA = "tuning"  # train split of a user sample, with those users' valid targets
FINAL_DATA = "final"  # train+valid of every user


def training_data_store(model_store: ModelStoreResource) -> ModelStore:
    return ModelStore(
        model_store.database, schema=model_store.schema_name, table=TRAINING_DATA_STORE_TABLE
    )


@asset(group_name=GROUP, kinds={"duckdb", "polars"})
def training_data(
    context: AssetExecutionContext,
    config: TrainingDataConfig,
    model_store: ModelStoreResource,
    splits: pl.DataFrame,
    item_catalog: pl.DataFrame,
    category_tree: pl.DataFrame,
) -> pl.DataFrame:
    """What every model learns from, built once per graph run (``recsys.training_data``).

    Two archives (plain numpy arrays, no pickle) in ``recsys.training_data_store``: ``final``
    (train+valid of every user, for ``trained_model``) and ``tuning`` (the train split of a
    seeded user sample with those users' new validation items, for ``tuned_params``). Every
    model asset loads the archive instead of loading ``splits`` and rebuilding it; the table
    names the versions they load.
    """
    store = training_data_store(model_store)
    rows = []
    # the last train event: the Hybrid's label period is the valid split that follows it
    train_end_ms = splits.filter(pl.col("split") == "train")["timestamp"].cast(pl.Int64).max()

    def save(name: str, data: TrainingData, seconds: float, meta: dict, extra=None) -> None:
        payload = training_data_to_bytes(data, meta, extra)
        version = store.save(name, payload, {}, info=meta)
        _drop_older_versions(model_store, name, version)
        rows.append(
            {
                "name": name,
                "version": version,
                "splits": ",".join(meta["splits"]),
                "users": data.n_users,
                "items": data.n_items,
                "interactions": int(data.user_item.nnz),
                "events": int(data.event_item.size),
                "user_fraction": float(meta["user_fraction"]),
                "size_bytes": len(payload),
                "build_seconds": seconds,
                "train_end_ms": train_end_ms,
            }
        )
        context.log.info(
            f"training data {name}: {data.n_users:,} users x {data.n_items:,} items, "
            f"{data.event_item.size:,} events, {len(payload) / 2**20:.1f} MiB, "
            f"built in {seconds:.1f} s"
        )

    start = time.perf_counter()
    final = build_training_data(
        splits, item_catalog, category_tree, use_splits=FINAL_TRAINING_SPLITS
    )
    meta = {"splits": list(FINAL_TRAINING_SPLITS), "user_fraction": 1.0}
    save(FINAL_DATA, final, time.perf_counter() - start, meta)
    del final

    start = time.perf_counter()
    # every user that tuning scores (train history and a valid target) is in the sample
    scored = holdout_targets(splits, history_splits=("train",), target_split="valid")["user_id"]
    users = sample_users(
        splits,
        ("train",),
        config.tuning_user_fraction,
        config.tuning_min_users,
        config.seed,
        always=scored.unique(),
        max_users=config.tuning_max_users,
    )
    sampled = splits.filter(pl.col("user_id").is_in(users.implode()))
    tuning = build_training_data(sampled, item_catalog, category_tree, use_splits=("train",))
    targets = holdout_targets(sampled, history_splits=("train",), target_split="valid")
    n_train_users = splits.filter(pl.col("split") == "train")["user_id"].n_unique()
    meta = {
        "splits": ["train"],
        "user_fraction": users.len() / max(n_train_users, 1),
        "sampled_users": int(users.len()),
        "train_users": int(n_train_users),
        "seed": config.seed,
    }
    extra = {
        "valid_user": targets["user_id"].cast(pl.Int64).to_numpy(),
        "valid_item": targets["item_id"].cast(pl.Int64).to_numpy(),
    }
    save(TUNING_DATA, tuning, time.perf_counter() - start, meta, extra)
    table = pl.DataFrame(rows).with_columns(built_at=pl.lit(datetime.now(UTC).isoformat()))
    context.add_output_metadata(
        frame_metadata(
            table,
            tuning_users=int(users.len()),
            train_users=int(n_train_users),
            sizes=MetadataValue.md(markdown_table(table)),
        )
    )
    return table


def tuning_fits_store(model_store: ModelStoreResource) -> ModelStore:
    return ModelStore(model_store.database, schema=model_store.schema_name, table=TUNING_FITS_TABLE)


def _drop_older_versions(
    model_store: ModelStoreResource,
    name: str,
    version: int,
    table_name: str = TRAINING_DATA_STORE_TABLE,
) -> None:
    """Keep only the newest archive of ``name``: each is tens of MB at scale 1.0, and a model
    keeps its own provenance (users, items, interactions) in the model store."""
    table = f"{model_store.schema_name}.{table_name}"
    with connect(model_store.database) as con:
        con.execute(f"delete from {table} where model = ? and version < ?", [name, version])


def archive_version(table: pl.DataFrame, name: str) -> int:
    """The version of the archive ``name`` (``tuning`` or ``final``) that ``table`` names."""
    row = table.filter(pl.col("name") == name) if table.height else table
    if not row.height:
        raise ValueError(
            f"training_data: no '{name}' row; materialise training_data first "
            "(dagster asset materialize --select training_data)"
        )
    return int(row["version"][0])


def load_training_data(
    model_store: ModelStoreResource, table: pl.DataFrame, name: str
) -> tuple[TrainingData, dict[str, Any], dict[str, Any]]:
    """The archive ``name`` (``tuning`` or ``final``) at the version ``table`` names."""
    stored = training_data_store(model_store).load(name, archive_version(table, name))
    return training_data_from_bytes(stored.payload)


def fitted_sources(
    store: ModelStore,
    model: Any,
    data_version: int,
    log,
    role: str = "fitted sources",
    run_id: str | None = None,
) -> tuple[dict[str, Any], dict[str, int]]:
    """The stored models a model built on others (the Hybrid) can reuse: for each of its
    sources, the newest version in ``store`` when it was fitted on the training-data archive
    ``data_version`` (the one this fit uses), loaded, and its version. Others are fitted by the
    model itself. With ``run_id``, each is deserialised once in that run (``run_models``): the
    run's later steps that load the same version get the same object; without, every time."""
    from recsys_assets.core.models.run_models import load_for_run
    from recsys_assets.core.models.store import ModelVersionNotFoundError

    if not hasattr(model, "fit_with_sources"):
        return {}, {}
    found, versions, stale = {}, {}, []
    for source in model._source_names():
        try:
            stored = store.load(source, payload=False)
        except ModelVersionNotFoundError:
            stale.append(f"{source} (none stored)")
            continue
        if stored.info.get("training_data_version") != data_version:
            stale.append(f"{source} (v{stored.version} is from other training data)")
            continue
        found[source] = load_for_run(store, source, stored.version, run_id)[1]
        versions[source] = stored.version
    log.info(
        f"{model.name}: reusing {role} {sorted(found) or 'none'}"
        + (f"; fitting {', '.join(stale)} itself" if stale else "")
    )
    return found, versions


def history_sources(
    model_store: ModelStoreResource, model: Any, training_data: pl.DataFrame, log
) -> tuple[dict[str, Any] | None, int | None]:
    """The Hybrid's history-phase sources: the tuning studies' chosen fits of its sources on
    this run's ``tuning`` archive (the train split of a user sample with every user that has a
    validation target), and the end of the train split. (None, None) when the table predates
    ``train_end_ms`` or no fit matches: the Hybrid then fits its history phase itself."""
    if "train_end_ms" not in training_data.columns:
        return None, None
    end = training_data.filter(pl.col("name") == FINAL_DATA)["train_end_ms"]
    if end.is_empty() or end[0] is None:
        return None, None
    version = archive_version(training_data, TUNING_DATA)
    found, _ = fitted_sources(
        tuning_fits_store(model_store), model, version, log, "tuning fits as history sources"
    )
    return (found, int(end[0])) if found else (None, None)


class TuningConfig(ModelParamsConfig):
    """Optuna study on the validation split of the tuning sample (``training_data``).

    ``n_trials`` / ``timeout_seconds`` unset: the model's own budget (``tuning_trials``,
    ``tuning_timeout_seconds`` on its class), the seconds capped at ``max_timeout_seconds``
    so that seven models tune in minutes, not a quarter of an hour. The timeout is a deadline:
    no trial starts when the median trial so far would end past it.
    """

    n_trials: int | None = None
    timeout_seconds: float | None = None
    max_timeout_seconds: float = 60.0
    seed: int = 0
    max_eval_users: int = 5000


@asset(
    group_name=GROUP,
    partitions_def=model_partitions,  # no pool: see PER_MODEL_TEST_TABLE
    metadata={"partition_expr": "model"},
    kinds={"optuna", "duckdb"},
)
def tuned_params(
    context: AssetExecutionContext,
    config: TuningConfig,
    mlflow: ResourceParam[MlFlow],
    model_store: ModelStoreResource,
    training_data: pl.DataFrame,
) -> pl.DataFrame:
    """Best hyper-parameters of one model by NDCG@10 on the validation split.

    Trials fit on the train split of a user sample (``training_data``'s ``tuning`` archive) and
    are scored on those users' validation items; ``trained_model`` refits the chosen parameters
    on all users. Trial 0 is the defaults, so the result never scores below them on valid.
    """
    import optuna

    name = context.partition_key
    cls = get_model_class(name)
    overrides = config.overrides(name)
    n_trials = config.n_trials if config.n_trials is not None else cls.tuning_trials
    timeout = (
        config.timeout_seconds
        if config.timeout_seconds is not None
        else min(cls.tuning_timeout_seconds, config.max_timeout_seconds)
    )
    data, sample, extra = load_training_data(model_store, training_data, TUNING_DATA)
    data_version = archive_version(training_data, TUNING_DATA)
    probe = create_model(name)  # (unfitted: which sources it takes, what a trial costs)
    sources, _ = fitted_sources(tuning_fits_store(model_store), probe, data_version, context.log)
    targets = pl.DataFrame({"user_id": extra["valid_user"], "item_id": extra["valid_item"]})
    users = targets["user_id"].unique().sort()
    if users.len() > config.max_eval_users:
        users = users.sample(config.max_eval_users, seed=config.seed).sort()
        targets = targets.join(users.to_frame(), on="user_id", how="semi")
    n_items = len(data.item_ids)
    context.log.info(
        f"tuning {name}: up to {n_trials} trials or {timeout:.0f} s, on {data.n_users:,} "
        f"sampled users ({sample['user_fraction']:.0%} of train), NDCG@10 of {users.len():,} "
        f"valid users over {n_items:,} items"
    )

    unaffordable = (
        probe.first_trial_too_slow(sources, timeout) if sources and timeout is not None else None
    )
    if unaffordable is not None:
        return _skipped_study(context, mlflow, name, cls, overrides, unaffordable, users.len())

    def objective(trial: optuna.Trial) -> float:
        # Trial 0 is the defaults, so tuning can only keep or improve them on valid. (Enqueuing
        # them would not do: a search space may name its dimensions differently from the
        # parameters, e.g. NCF's mlp_width/mlp_depth for mlp_layers.)
        suggested = cls.default_params() if trial.number == 0 else cls.search_space(trial)
        params = {**suggested, **overrides}
        trial.set_user_attr("params_json", json.dumps(params, default=float))
        model = create_model(name, params)
        if sources:
            model.fit_with_sources(data, sources)
        else:
            model.fit(data)
        _, summary, per_user = evaluate(model, name, targets, n_items, k=10)
        per_user_ndcg[trial.number] = per_user.select("user_id", "ndcg_at_10")
        # Trial 0 and the best other trial so far stay in memory: the chosen one is stored for
        # the models built on others (the Hybrid's tuning reuses it instead of refitting)
        if keep_fits:
            value = summary["ndcg_at_10"]
            earlier = [n for n in fits if n != 0]  # the best non-default trial so far
            if trial.number == 0:
                fits[0] = (value, model)
            elif not earlier or value > fits[earlier[0]][0]:
                for n in earlier:
                    del fits[n]
                fits[trial.number] = (value, model)
        return summary["ndcg_at_10"]

    per_user_ndcg: dict[int, pl.DataFrame] = {}
    keep_fits = not hasattr(cls, "fit_with_sources")
    fits: dict[int, tuple[float, Any]] = {}

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=config.seed)
    )
    start = time.perf_counter()
    with cls.tuning_context():
        study.optimize(
            objective,
            n_trials=n_trials,
            timeout=timeout,
            callbacks=[_trial_logger(context, n_trials), deadline_stop(start, timeout)],
        )
    seconds = time.perf_counter() - start
    default_value = study.trials[0].value if study.trials[0].value is not None else float("nan")
    winner = study.best_trial
    z = improvement_z(per_user_ndcg.get(0), per_user_ndcg.get(winner.number))
    chosen = winner if winner.number == 0 or z >= MIN_IMPROVEMENT_Z else study.trials[0]
    best = {**cls.default_params(), **json.loads(chosen.user_attrs["params_json"])}
    if chosen.number in fits:
        _, chosen_model = fits.pop(chosen.number)
        fits.clear()
        store = tuning_fits_store(model_store)
        version = store.save(
            name,
            chosen_model.to_bytes(),
            dict(chosen_model.params),
            info={"training_data_version": data_version, "trial": int(chosen.number)},
        )
        _drop_older_versions(model_store, name, version, TUNING_FITS_TABLE)
        del chosen_model
    context.log.info(
        f"tuned {name}: best ndcg@10={study.best_value:.4f} (trial {winner.number + 1}"
        f" of {len(study.trials)}, defaults {default_value:.4f}, paired z={z:.2f}) in "
        f"{seconds:.1f} s; "
        + (
            "keeping the defaults: the gain is within noise"
            if chosen is not winner
            else f"chose trial {chosen.number + 1}"
        )
    )
    table = _tuned_params_table(
        name,
        best,
        (float(chosen.value), float(default_value), float(study.best_value), float(z)),
        int(chosen.number),
        len(study.trials),
        seconds,
        int(users.len()),
    )
    trials = study.trials_dataframe(attrs=("number", "value", "params"))
    log_to_mlflow(
        mlflow,
        "tuning",
        params=best,
        metrics={
            "best_ndcg_at_10": float(chosen.value),
            "improvement_z": float(z),
            "n_trials": len(study.trials),
            "seconds": seconds,
            "tuning_users": data.n_users,
        },
        tags={"model": name},
    )
    context.add_output_metadata(
        frame_metadata(
            table,
            best_params=best,
            best_ndcg_at_10=float(chosen.value),
            default_ndcg_at_10=float(default_value),
            best_trial_ndcg_at_10=float(study.best_value),
            improvement_z=float(z),
            chosen_trial=int(chosen.number),
            tuning_users=data.n_users,
            tuning_user_fraction=float(sample["user_fraction"]),
            tuning_interactions=int(data.user_item.nnz),
            timeout_seconds=float(timeout),
            trials=MetadataValue.md(markdown_table(pl.from_pandas(trials), max_rows=30)),
        )
    )
    return table


_STUDY_SCORES = ("best_ndcg_at_10", "default_ndcg_at_10", "best_trial_ndcg_at_10", "improvement_z")


def _tuned_params_table(
    name: str,
    params: dict[str, Any],
    scores: tuple[float, float, float, float] | None,
    chosen_trial: int,
    n_trials: int,
    seconds: float,
    valid_users: int,
) -> pl.DataFrame:
    """The one-row ``tuned_params`` table; ``scores`` (``_STUDY_SCORES``) null for a study that
    was not run."""
    values = scores if scores is not None else (None,) * len(_STUDY_SCORES)
    return pl.DataFrame(
        {
            "model": [name],
            "params_json": [json.dumps(params, default=float)],
            **{c: [v] for c, v in zip(_STUDY_SCORES, values, strict=True)},
            "chosen_trial": [int(chosen_trial)],
            "n_trials": [int(n_trials)],
            "seconds": [float(seconds)],
            "valid_users": [int(valid_users)],
            "tuned_at": [datetime.now(UTC).isoformat()],
        },
        schema_overrides=dict.fromkeys(_STUDY_SCORES, pl.Float64),
    )


def _skipped_study(
    context: AssetExecutionContext,
    mlflow: MlFlow,
    name: str,
    cls: Any,
    overrides: dict[str, Any],
    reason: str,
    valid_users: int,
) -> pl.DataFrame:
    """The defaults, unscored: a study whose first trial (the defaults) alone would use the
    whole budget cannot choose anything else, so it is not run (the scores are null)."""
    best = {**cls.default_params(), **overrides}
    context.log.info(f"tuning {name} skipped, keeping the defaults: {reason}")
    table = _tuned_params_table(name, best, None, 0, 0, 0.0, valid_users)
    log_to_mlflow(mlflow, "tuning", params=best, metrics={"n_trials": 0}, tags={"model": name})
    context.add_output_metadata(frame_metadata(table, best_params=best, skipped=reason, n_trials=0))
    return table


# A trial must beat the defaults by this many standard errors of the paired per-user NDCG@10
# difference to be chosen: the best of several noisy trials is biased upwards, and at small
# scales the "winner" often loses to the defaults on test.
MIN_IMPROVEMENT_Z = 2.0


def improvement_z(default: pl.DataFrame | None, best: pl.DataFrame | None) -> float:
    """Mean per-user NDCG@10 gain of ``best`` over ``default`` in standard errors (paired over
    the same valid users); 0 when either is missing or they are the same trial."""
    if default is None or best is None or default is best:
        return 0.0
    joined = default.join(best, on="user_id", how="inner", suffix="_best")
    diff = (joined["ndcg_at_10_best"] - joined["ndcg_at_10"]).to_numpy().astype(float)
    if len(diff) < 2:
        return 0.0
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    if se == 0:
        return float("inf") if diff.mean() > 0 else 0.0
    return float(diff.mean() / se)


def deadline_stop(start: float, timeout: float | None):
    """An Optuna callback that stops the study when the next trial could end past ``timeout``.

    Optuna's own ``timeout`` only refuses to *start* a trial after it; a trial started just
    before runs to its end, so a model with minute-long fits overran its budget by a whole fit.
    A trial's cost depends on the parameters it draws (ALS at scale 0.2: 13 s with the
    defaults, 85 s with many factors), so the next one is assumed to take twice the longest
    so far. None of the models reports intermediate values during its fit (the fits are
    single calls into implicit / torch loops), so a pruner could not cut a trial short: the
    deadline is the budget's only guard.
    """

    def stop_if_next_would_overrun(study, trial) -> None:
        if timeout is None:
            return
        longest = max(
            (t.duration.total_seconds() for t in study.trials if t.duration is not None),
            default=0.0,
        )
        if time.perf_counter() - start + 2 * longest > timeout:
            study.stop()

    return stop_if_next_would_overrun


def _trial_logger(context: AssetExecutionContext, n_trials: int):
    """An Optuna callback: one line per finished trial, e.g. "trial 3/6 ndcg@10=0.0123 (12.3 s)".

    A trial trains and scores a whole model; at scale 1.0 that takes minutes, so without these
    lines tuning looks hung.
    """

    def log_trial(study, trial) -> None:
        value = f"{trial.value:.4f}" if trial.value is not None else str(trial.state.name).lower()
        seconds = trial.duration.total_seconds() if trial.duration else float("nan")
        context.log.info(f"trial {trial.number + 1}/{n_trials} ndcg@10={value} ({seconds:.1f} s)")

    return log_trial


@asset(
    group_name=GROUP,
    partitions_def=model_partitions,  # no pool: see PER_MODEL_TEST_TABLE
    io_manager_key="model_io_manager",
    ins={
        # Tuning is optional: the model's own tuned_params row when it was tuned, else defaults
        # (a never-materialised tuned_params loads as an empty frame).
        "tuned_params": AssetIn(
            partition_mapping=IdentityPartitionMapping(),
            metadata={MISSING_TABLE_IS_EMPTY: True},
        )
    },
    kinds={"duckdb"},
)
def trained_model(
    context: AssetExecutionContext,
    config: ModelParamsConfig,
    mlflow: ResourceParam[MlFlow],
    model_store: ModelStoreResource,
    tuned_params: pl.DataFrame,
    training_data: pl.DataFrame,
) -> TrainedModel:
    """One model fitted on train+valid, stored as a new version in ``recsys.model_store``."""
    name = context.partition_key
    tuned = json.loads(tuned_params["params_json"][0]) if tuned_params.height else None
    overrides = config.overrides(name)
    params = {**get_model_class(name).default_params(), **(tuned or {}), **overrides}
    data, _, _ = load_training_data(model_store, training_data, FINAL_DATA)
    data_version = archive_version(training_data, FINAL_DATA)
    model = create_model(name, params)
    # the Hybrid: the other partitions' models of this training data are its final sources
    sources, source_versions = fitted_sources(
        model_store.store, model, data_version, context.log, run_id=context.run_id
    )
    # (the model logs its own data sizes and fit time; this says where the parameters came from)
    context.log.info(
        f"training {name} with {'tuned' if tuned else 'default'} parameters"
        f"{' and run-config overrides' if overrides else ''} on "
        f"{', '.join(FINAL_TRAINING_SPLITS)}: {params}"
    )
    start = time.perf_counter()
    if sources:
        # the tuning studies' chosen fits (train split) as its history-phase sources
        history, history_end = history_sources(model_store, model, training_data, context.log)
        model.fit_with_sources(data, sources, history, history_end)
        del history
        # stored as references to those versions, not as copies of their bytes
        model.reference_sources({n: source_versions[n] for n in model.reused_sources})
    else:
        model.fit(data)
    reused = sorted(sources)
    del sources
    train_seconds = time.perf_counter() - start
    context.log.info(f"trained {name} in {train_seconds:.1f} s")
    info = {
        "params_source": "tuned" if tuned else "defaults",
        "param_overrides": overrides,
        "users": len(data.user_ids),
        "items": len(data.item_ids),
        "interactions": int(data.user_item.nnz),
        "trained_on": list(FINAL_TRAINING_SPLITS),
        # which `final` archive: the Hybrid reuses a stored model only when it is this one
        "training_data_version": data_version,
        **({"reused_sources": reused, "source_versions": source_versions} if reused else {}),
        **(
            {"reused_history_sources": model.reused_history_sources}
            if getattr(model, "reused_history_sources", None)
            else {}
        ),
        "trained_at": datetime.now(UTC).isoformat(),
    }
    # (the stored size is logged by model_metrics: serialising here too would cost a second pass)
    log_to_mlflow(
        mlflow,
        "model",
        params=params,
        metrics={
            "train_seconds": train_seconds,
            "users": info["users"],
            "items": info["items"],
        },
        tags={"model": name},
    )
    context.add_output_metadata(
        {
            "train_seconds": train_seconds,
            "params": MetadataValue.json(params),
            "params_source": info["params_source"],
            "users": info["users"],
            "items": info["items"],
            "interactions": info["interactions"],
        }
    )
    return TrainedModel(name=name, model=model, train_seconds=train_seconds, info=info)


def stored_source_lists(
    context: AssetExecutionContext, model_store: ModelStoreResource, trained: TrainedModel
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For a model built on others (the Hybrid), its sources' ``eval_recommendations`` when
    they were scored from the very model versions it uses: the same test users' lists, so
    the Hybrid's evaluation does not score the whole catalogue with every source again."""
    versions = trained.info.get("source_versions") or {}
    if not versions or not hasattr(trained.model, "source_lists"):
        return {}
    # as deep as the model takes candidates from each source (less memory than all 100 ranks)
    depth = int(getattr(trained.model, "source_list_depth", EVAL_LIST_K))
    reusable = matching(versions, scored_lists(context.instance, versions), depth)
    found = {
        name: load_lists(model_store.database, model_store.schema_name, name, depth)
        for name in reusable
    }
    skipped = sorted(set(versions) - set(found))
    context.log.info(
        f"{trained.name}: candidates from the stored lists of {sorted(found) or 'no source'}"
        + (
            f"; scoring {', '.join(skipped)} anew (lists of another version, or too short)"
            if skipped
            else ""
        )
    )
    return found


# The catalogue's availability is all the evaluation reads of it.
CATALOG_AVAILABILITY = AssetIn("item_catalog", metadata={"columns": ["item_id", "available"]})


@asset(
    **{
        **PER_MODEL_TEST_TABLE,
        "ins": {**PER_MODEL_TEST_TABLE["ins"], "item_catalog": CATALOG_AVAILABILITY},
    }
)
def eval_recommendations(
    context: AssetExecutionContext,
    model_store: ModelStoreResource,
    trained_model: TrainedModel,
    splits: pl.DataFrame,
    item_catalog: pl.DataFrame,
) -> pl.DataFrame:
    """Top-50 lists for every test user with history (``recsys.eval_recommendations``).

    One batched scoring pass per model; ``rank`` is the model's order over the full catalogue
    (metrics use ranks up to 20), ``available_rank`` the order once unavailable items are
    dropped (the serving rule "available items only"; null for an unavailable item).
    """
    targets = holdout_targets(splits, FINAL_TRAINING_SPLITS, "test")
    users = targets["user_id"].unique().sort().to_numpy()
    context.log.info(
        f"scoring {trained_model.name}: top-{EVAL_LIST_K} lists for {len(users):,} users"
    )
    start = time.perf_counter()
    stored = stored_source_lists(context, model_store, trained_model)
    with trained_model.model.source_lists(stored) if stored else nullcontext():
        lists = recommend_lists(trained_model.model, users, trained_model.name, k=EVAL_LIST_K)
    seconds = time.perf_counter() - start
    lists = with_available_rank(lists, item_catalog)
    context.log.info(f"scored {trained_model.name}: {len(users):,} users in {seconds:.1f} s")
    context.add_output_metadata(
        frame_metadata(
            lists,
            model_version=trained_model.version or -1,
            list_depth=EVAL_LIST_K,  # what the serving bundle may take from here
            users=len(users),
            recommend_seconds=seconds,
            **({"source_lists_reused": ", ".join(sorted(stored))} if stored else {}),
        )
    )
    return lists


@asset(
    **{
        **PER_MODEL_TEST_TABLE,
        "ins": {**PER_MODEL_TEST_TABLE["ins"], "item_catalog": CATALOG_AVAILABILITY},
    }
)
def model_metrics(
    context: AssetExecutionContext,
    model_store: ModelStoreResource,
    mlflow: ResourceParam[MlFlow],
    eval_recommendations: pl.DataFrame,
    splits: pl.DataFrame,
    item_catalog: pl.DataFrame,
) -> pl.DataFrame:
    """Ranking metrics @10/@20 computed from the stored lists (``recsys.model_metrics``), over
    the full catalogue and, suffixed ``_available``, with unavailable items dropped from the
    lists (as the service shows them); ``unavailable_share_at_k`` is the share of unavailable
    items in the all-items top-k."""
    name = context.partition_key
    targets = holdout_targets(splits, FINAL_TRAINING_SPLITS, "test")
    lists = eval_recommendations.filter(pl.col("rank") <= EVAL_K)
    summary, _ = ranking_metrics(
        lists.select("user_id", "rank", "item_id"),
        targets,
        ks=(10, 20),
        n_catalogue_items=item_catalog.height,
    )
    if "available_rank" not in eval_recommendations.columns:  # lists stored before the column
        eval_recommendations = with_available_rank(eval_recommendations, item_catalog)
    available = available_only_metrics(eval_recommendations, targets, ks=(10, 20))
    # the newest version's record without its payload (the Hybrid's holds every source's bytes)
    stored = model_store.store.latest_record(name)
    row = {
        "model": name,
        **{k: float(v) for k, v in summary.items() if k != "users_evaluated"},
        **available,
        "users_evaluated": int(summary["users_evaluated"]),
        "train_seconds": float(stored["info"].get("train_seconds", float("nan"))),
        "model_version": stored["version"],
        "evaluated_at": datetime.now(UTC).isoformat(),
    }
    stored_metrics = [*summary, "ndcg_at_10_available", "unavailable_share_at_10"]
    model_store.store.set_metrics(name, stored["version"], {k: row[k] for k in stored_metrics})
    context.log.info(
        f"{name} v{stored['version']}: ndcg@10={row['ndcg_at_10']:.4f} "
        f"(available only {row['ndcg_at_10_available']:.4f}, "
        f"{row['unavailable_share_at_10']:.0%} of the top-10 unavailable) "
        f"over {row['users_evaluated']:,} test users"
    )
    table = pl.DataFrame([row])
    log_to_mlflow(
        mlflow,
        "test",
        metrics={**summary, **available, "model_size_bytes": stored["size_bytes"]},
        tags={"model": name},
    )
    context.add_output_metadata(
        frame_metadata(
            table,
            **{k: float(v) for k, v in summary.items()},
            ndcg_at_10_available=row["ndcg_at_10_available"],
            unavailable_share_at_10=row["unavailable_share_at_10"],
        )
    )
    return table


@asset(
    group_name=GROUP,
    ins={
        # only the models that implement the protocol: their partitions, nothing else loaded
        "trained_model": AssetIn(
            partition_mapping=SpecificPartitionsPartitionMapping(list(SESSION_MODELS))
        )
    },
    kinds={"duckdb", "polars"},
)
def session_metrics(
    context: AssetExecutionContext, trained_model: dict[str, TrainedModel], splits: pl.DataFrame
) -> pl.DataFrame:
    """Next-item Recall@20 / MRR@20 over test sessions (the GRU4Rec papers' protocol)."""
    missing = [name for name in SESSION_MODELS if name not in trained_model]
    if missing:
        raise ValueError(
            f"session_metrics needs trained_model for {missing}: materialise those partitions "
            "first (dagster asset materialize --select trained_model --partition <name>)"
        )
    prefixes, targets = next_item_events(splits, split="test", max_events=50_000, seed=0)
    rows = []
    for name in SESSION_MODELS:
        trained = trained_model[name]
        model = trained.model
        context.log.info(f"session protocol: {name} on {len(targets):,} next-item events")
        start = time.perf_counter()
        result = session_protocol(model.recommend_session, prefixes, targets, k=20)
        rows.append(
            {
                "model": name,
                "model_version": trained.version,
                "recall_at_20": float(result["recall_at_20"]),
                "mrr_at_20": float(result["mrr_at_20"]),
                "n_events": int(result["n_events"]),
                "seconds": time.perf_counter() - start,
            }
        )
        context.log.info(
            f"session protocol: {name} recall@20={rows[-1]['recall_at_20']:.4f} "
            f"in {rows[-1]['seconds']:.1f} s"
        )
    table = pl.DataFrame(rows)
    context.add_output_metadata(frame_metadata(table))
    return table


LEADERBOARD_COLUMNS = {
    "precision_at_10": "P@10",
    "recall_at_10": "R@10",
    "ndcg_at_10": "NDCG@10",
    "hit_rate_at_10": "HR@10",
    # the same lists with unavailable items dropped (what a shop shows), and how many were
    "ndcg_at_10_available": "NDCG@10 avail",
    "recall_at_10_available": "R@10 avail",
    "unavailable_share_at_10": "unavail@10",
    "train_seconds": "train s",
}


@asset(
    group_name=GROUP,
    ins={"model_metrics": AssetIn(), "session_metrics": AssetIn()},
    kinds={"duckdb", "polars"},
)
def leaderboard(
    context: AssetExecutionContext, model_metrics: pl.DataFrame, session_metrics: pl.DataFrame
) -> pl.DataFrame:
    """Every model side by side, best NDCG@10 first, with its lift over Popularity."""
    session = session_metrics.select(
        "model",
        pl.col("recall_at_20").alias("session_recall_at_20"),
        pl.col("mrr_at_20").alias("session_mrr_at_20"),
    )
    table = model_metrics.join(session, on="model", how="left").sort("ndcg_at_10", descending=True)
    baseline = table.filter(pl.col("model") == "popular")["ndcg_at_10"]
    if baseline.len():
        table = table.with_columns(
            (pl.col("ndcg_at_10") / baseline[0]).alias("ndcg_at_10_vs_popular")
        )
    seed_table = table.select(
        "model", *[pl.col(c).alias(label) for c, label in LEADERBOARD_COLUMNS.items()]
    )
    context.add_output_metadata(
        frame_metadata(
            table,
            results=MetadataValue.md(markdown_table(seed_table, max_rows=20)),
            all_metrics=MetadataValue.md(markdown_table(table, max_rows=20)),
            best_model=str(table["model"][0]) if table.height else "",
        )
    )
    return table
