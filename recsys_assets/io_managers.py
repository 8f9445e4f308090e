"""IO managers: the DuckDB warehouse (polars tables) and the model store (versioned models)."""

from __future__ import annotations

import typing
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from dagster import (
    ConfigurableIOManager,
    DagsterInvariantViolationError,
    InitResourceContext,
    InputContext,
    MetadataValue,
    OutputContext,
)
from dagster_duckdb import DuckDBResource
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_polars import DuckDBPolarsIOManager, DuckDBPolarsTypeHandler

from recsys_assets.core import duckdb_retry
from recsys_assets.core.models.store import ModelStore, ModelVersionNotFoundError, StoredModel

# Input metadata (``AssetIn(metadata={MISSING_TABLE_IS_EMPTY: True})``) for an upstream asset that
# is optional: a table never materialised loads as an empty frame instead of failing the run.
MISSING_TABLE_IS_EMPTY = "missing_table_is_empty"
# Input metadata: of a table of ranked lists (a ``rank`` column), load the rows of rank <= N
# only. The experiment reports read the top 10 of every model's 100-deep evaluation lists: at
# scale 1.0 the whole table is 58M rows, and loading it took 4 GB in each report.
MAX_RANK = "max_rank"


class _OptionalTablesHandler(DuckDBPolarsTypeHandler):
    """Empty frames stored as empty tables; the connection closed when a load or write fails.

    dagster-duckdb closes its connection only after a block that succeeded. A load that failed
    (a missing table) left it open, held by the traceback Dagster keeps for the failure, and
    the next step of the same process that opened the warehouse with another configuration
    (the model store) failed with "Can't open a connection to same database file with a
    different configuration than existing connections": one failure became two.
    """

    def handle_output(self, context: OutputContext, table_slice, obj, connection) -> None:
        with _closed_on_error(connection):
            if isinstance(obj, pl.DataFrame) and obj.width:
                _align_columns(connection, f"{table_slice.schema}.{table_slice.table}", obj)
                if obj.is_empty():
                    # dagster-duckdb-polars writes no table for an empty frame. A shop whose
                    # click-stream has no purchase has no RFM segment: the table never
                    # existed, and every reader (ui_reports) failed with "Table ... does not
                    # exist". An empty table with the frame's columns says "nothing", as the
                    # frame does.
                    _create_empty(connection, table_slice, obj)
                    context.add_output_metadata({"row_count": 0, "empty": True})
                    return
            super().handle_output(context, table_slice, obj, connection)

    def load_input(self, context: InputContext, table_slice, connection) -> pl.DataFrame:
        with _closed_on_error(connection):
            try:
                max_rank = (context.definition_metadata or {}).get(MAX_RANK)
                if max_rank is None:
                    return super().load_input(context, table_slice, connection)
                if table_slice.partition_dimensions and not context.asset_partition_keys:
                    return pl.DataFrame()
                # the filter runs in DuckDB: only the ranks asked for are read and converted
                select = DuckDbClient.get_select_statement(table_slice=table_slice)
                query = f"select * from ({select}) where rank <= {int(max_rank)}"
                return pl.DataFrame(connection.execute(query).fetch_arrow_table())
            except duckdb.CatalogException:
                if not (context.definition_metadata or {}).get(MISSING_TABLE_IS_EMPTY):
                    raise
                return pl.DataFrame()


@contextmanager
def _closed_on_error(connection: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """``connection`` closed when the block raises (see :class:`_OptionalTablesHandler`)."""
    try:
        yield
    except BaseException:
        connection.close()
        raise


def _create_empty(connection, table_slice, obj: pl.DataFrame) -> None:
    """The table of ``table_slice`` with ``obj``'s columns, when it does not exist yet (the IO
    manager has already deleted this output's rows of an existing one)."""
    # a column of polars' Null type (all values missing) has no DuckDB type to create
    frame = obj.with_columns(pl.col(pl.Null).cast(pl.Utf8))
    connection.execute(f"create schema if not exists {table_slice.schema}")
    connection.register("_recsys_empty", frame.to_arrow())
    try:
        connection.execute(
            f"create table if not exists {table_slice.schema}.{table_slice.table} "
            "as select * from _recsys_empty"
        )
    finally:
        connection.unregister("_recsys_empty")


def _align_columns(connection, table: str, obj: pl.DataFrame) -> None:
    """Give an existing table the columns of ``obj`` (new ones null for the rows already there).

    The IO manager inserts by position into a partitioned table that already exists, so a
    column added to an asset (e.g. ``available_rank`` of eval_recommendations) would fail the
    next run on a warehouse written by an older version; the other partitions' rows are kept.
    """
    try:
        existing = [row[0] for row in connection.execute(f"describe {table}").fetchall()]
    except duckdb.CatalogException:
        return
    if existing == obj.columns:
        return
    connection.register("_recsys_new_rows", obj.head(0).to_arrow())
    try:
        rows = connection.execute("describe select * from _recsys_new_rows").fetchall()
    finally:
        connection.unregister("_recsys_new_rows")
    types = {row[0]: row[1] for row in rows}
    select = ", ".join(
        f'"{c}"' if c in existing else f'cast(null as {types[c]}) as "{c}"' for c in obj.columns
    )
    connection.execute(f"create or replace table {table} as select {select} from {table}")


class WarehouseResource(DuckDBResource):
    """Dagster's DuckDB resource, closing the connection when the block raises too (see
    :class:`_OptionalTablesHandler`)."""

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with DuckDBResource.get_connection(self) as connection, _closed_on_error(connection):
            yield connection


class _WaitingClient(DuckDbClient):
    """dagster-duckdb's client, waiting for a file another process holds as the model store
    does (``core/duckdb_retry.py``: pauses that stop growing at 0.5 s, up to 300 s). Its own
    backoff doubles every pause (0.1 s ... 51.2 s, about 100 s in all): with runs side by side,
    a step that found the file held for 10 s slept up to 12 s more, and a hold that outlasted
    the 100 s failed the run."""

    @staticmethod
    @contextmanager
    def connect(context, _) -> Iterator[duckdb.DuckDBPyConnection]:
        config = {"custom_user_agent": "dagster", **context.resource_config["connection_config"]}
        connection = duckdb_retry.connect(context.resource_config["database"], config=config)
        try:
            yield connection
        finally:
            connection.close()


class WarehouseIOManager(DuckDBPolarsIOManager):
    """The DuckDB/polars IO manager, creating the warehouse's folder when a run first needs it
    (its type handler closes the connection when a load or a write fails), and waiting while
    another process holds the file (``_WaitingClient``)."""

    def setup_for_execution(self, context: InitResourceContext) -> None:
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        super().setup_for_execution(context)

    def create_io_manager(self, context):
        manager = super().create_io_manager(context)
        # dagster-duckdb has no setting for how its connections wait; its DbIOManager keeps the
        # client in one attribute (tests/test_duckdb_retry.py fails if that ever changes)
        manager._db_client = _WaitingClient()
        return manager

    @staticmethod
    def type_handlers() -> list[DuckDBPolarsTypeHandler]:
        return [_OptionalTablesHandler()]


@dataclass
class TrainedModel:
    """What ``trained_model`` returns and its consumers receive: the model and its provenance."""

    name: str
    model: Any  # a recsys_assets.core.models.base.Recommender
    train_seconds: float
    info: dict[str, Any] = field(default_factory=dict)
    version: int | None = None  # set by the store
    # as stored (filled when loaded): metrics are attached by model_metrics after training
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    created_at: datetime | None = None


def _wants_mapping(context: InputContext) -> bool:
    annotation = context.dagster_type.typing_type
    return annotation is dict or typing.get_origin(annotation) in (dict, Mapping)


class ModelStoreIOManager(ConfigurableIOManager):
    """Stores each output as a new version in ``{schema}.model_store``; loads the latest one.

    An input can pin an older version with ``AssetIn(metadata={"model_version": N})``; a version
    that does not exist is a clear ``ModelVersionNotFoundError``. An unpartitioned consumer of
    several model partitions (an input annotated ``dict[str, TrainedModel]`` with a partition
    mapping such as ``AllPartitionMapping``) gets the latest version of each mapped model that
    was ever trained, by name.
    """

    database: str
    schema_name: str = "recsys"

    @property
    def store(self) -> ModelStore:
        return ModelStore(self.database, schema=self.schema_name)

    def handle_output(self, context: OutputContext, obj: TrainedModel) -> None:
        payload = obj.model.to_bytes()
        info = {**obj.info, "train_seconds": obj.train_seconds, "dagster_run_id": context.run_id}
        version = self.store.save(obj.name, payload, dict(obj.model.params), info=info)
        obj.version = version
        context.add_output_metadata(
            {
                "model_version": version,
                "size_bytes": MetadataValue.int(len(payload)),
                "store_table": f"{self.schema_name}.model_store",
            }
        )

    def load_input(self, context: InputContext) -> TrainedModel | dict[str, TrainedModel]:
        from recsys_assets.core.models.hybrid import resolving_sources
        from recsys_assets.core.models.run_models import forget as forget_run_models
        from recsys_assets.core.models.run_models import load_for_run

        # Each stored version is deserialised once per run (``run_models``): a Hybrid refers to
        # its sources' versions, and its run loaded them already to fit it. Outside a run
        # (``load_asset_value``), once per call: a consumer of every partition still gets the
        # very source objects it loaded itself, and nothing is kept after the call.
        run_id = _run_id(context)
        call_only = run_id is None
        if call_only:
            run_id = f"load-{uuid.uuid4().hex}"

        def load(name: str, version: int | None = None) -> TrainedModel:
            stored, model = load_for_run(self.store, name, version, run_id)
            return _trained(stored, model)

        try:
            with resolving_sources(lambda name, version: load(name, version).model):
                if _wants_mapping(context):
                    models = {}
                    for name in context.asset_partition_keys:
                        try:
                            models[name] = load(name)
                        except ModelVersionNotFoundError:
                            continue  # never trained; the consumer says whether it needs it
                    return models
                version = (context.definition_metadata or {}).get("model_version")
                return load(context.asset_partition_key, version)
        finally:
            if call_only:
                forget_run_models()


def _run_id(context: InputContext) -> str | None:
    """The run loading the input; None outside a run's step (``Definitions.load_asset_value``)."""
    try:
        return context.step_context.run_id
    except DagsterInvariantViolationError:
        return None


def _trained(stored: StoredModel, model: Any) -> TrainedModel:
    return TrainedModel(
        name=stored.model,
        model=model,
        train_seconds=float(stored.info.get("train_seconds", float("nan"))),
        info=stored.info,
        version=stored.version,
        params=stored.params,
        metrics=stored.metrics,
        created_at=stored.created_at,
    )
