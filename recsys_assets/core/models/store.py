"""Versioned model artifacts in one DuckDB table, so any past version can be loaded back.

Each save appends a row (model, version, created_at, params, metrics, size, bytes); nothing is
overwritten. Connections are short-lived because DuckDB allows one writing process per file:
models trained side by side in several processes take turns, each connection waiting while
another holds it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from recsys_assets.core.duckdb_retry import connect


class ModelVersionNotFoundError(LookupError):
    """Raised when a model, or a version of it, was never stored."""


@dataclass(frozen=True)
class StoredModel:
    model: str
    version: int
    created_at: datetime
    params: dict[str, Any]
    metrics: dict[str, float]
    info: dict[str, Any]
    payload: bytes


class ModelStore:
    def __init__(self, database: str | Path, schema: str = "recsys", table: str = "model_store"):
        self.database = str(database)
        self.table = f"{schema}.{table}"
        # Metrics arrive after training, in a table of their own: an UPDATE of a row that holds a
        # large payload makes DuckDB rewrite it (the Hybrid's 1.7 GB row at scale 1.0: 61 s and
        # 16 GB of RSS for one set_metrics); an insert here costs milliseconds.
        self.metrics_table = f"{schema}.{table}_metrics"
        self.schema = schema

    def _connect(self, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        if read_only and not Path(self.database).exists():
            raise ModelVersionNotFoundError(f"no model store at {self.database}")
        # Always a read-write connection: DuckDB refuses two connections with different
        # configurations to one file inside a process (the IO managers open read-write ones).
        # Waits while another process (a model trained side by side) holds the file.
        return connect(self.database)

    def _ensure(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute(f"create schema if not exists {self.schema}")
        con.execute(
            f"""create table if not exists {self.table} (
                model varchar not null, version integer not null,
                created_at timestamptz not null, params json, metrics json, info json,
                size_bytes bigint not null, payload blob not null,
                primary key (model, version))"""
        )
        con.execute(
            f"""create table if not exists {self.metrics_table} (
                model varchar not null, version integer not null, metrics json,
                primary key (model, version))"""
        )

    def save(
        self,
        model: str,
        payload: bytes,
        params: dict[str, Any],
        metrics: dict[str, float] | None = None,
        info: dict[str, Any] | None = None,
    ) -> int:
        """Append a new version of ``model`` and return its number (1, 2, …)."""
        with self._connect() as con:
            self._ensure(con)
            con.execute("begin transaction")
            (last,) = con.execute(
                f"select coalesce(max(version), 0) from {self.table} where model = ?", [model]
            ).fetchone()
            version = int(last) + 1
            con.execute(
                f"insert into {self.table} values (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    model,
                    version,
                    datetime.now(UTC),
                    json.dumps(params, default=_jsonable),
                    json.dumps(metrics or {}),
                    json.dumps(info or {}, default=_jsonable),
                    len(payload),
                    payload,
                ],
            )
            con.execute("commit")
        return version

    def set_metrics(self, model: str, version: int, metrics: dict[str, float]) -> None:
        """Attach evaluation metrics to a stored version (they are computed after training)."""
        with self._connect() as con:
            self._ensure(con)
            found = con.execute(
                f"select 1 from {self.table} where model = ? and version = ?", [model, version]
            ).fetchone()
            if found is None:
                raise ModelVersionNotFoundError(f"model '{model}' has no version {version}")
            con.execute(
                f"insert or replace into {self.metrics_table} values (?, ?, ?)",
                [model, version, json.dumps(metrics)],
            )

    def load(self, model: str, version: int | None = None, payload: bool = True) -> StoredModel:
        """The given version of ``model``, or its latest one; with ``payload=False`` the record
        alone (``payload`` empty), without reading the model's bytes."""
        column = "payload" if payload else "''::blob"
        try:
            with self._connect(read_only=True) as con:
                self._ensure(con)
                query = (
                    f"select s.model, s.version, created_at, params, "
                    f"coalesce(m.metrics, s.metrics), info, {column} from {self.table} s "
                    f"left join {self.metrics_table} m using (model, version) where model = ?"
                )
                args: list[Any] = [model]
                if version is None:
                    query += " order by s.version desc limit 1"
                else:
                    query += " and s.version = ?"
                    args.append(int(version))
                row = con.execute(query, args).fetchone()
        except duckdb.CatalogException:
            row = None
        if row is None:
            available = self._versions_text(model)
            wanted = "any version" if version is None else f"version {version}"
            raise ModelVersionNotFoundError(
                f"model '{model}' has no stored {wanted} in {self.database} ({available})"
            )
        return StoredModel(
            model=row[0],
            version=int(row[1]),
            created_at=row[2],
            params=json.loads(row[3] or "{}"),
            metrics=json.loads(row[4] or "{}"),
            info=json.loads(row[5] or "{}"),
            payload=bytes(row[6]),
        )

    def versions(self, model: str | None = None) -> pl.DataFrame:
        """Every stored version (without the payload), newest first."""
        try:
            with self._connect(read_only=True) as con:
                self._ensure(con)
                where = "where model = ?" if model else ""
                rel = con.execute(
                    f"select model, version, created_at, size_bytes, params, "
                    f"coalesce(m.metrics, s.metrics) as metrics, info from {self.table} s "
                    f"left join {self.metrics_table} m using (model, version) "
                    f"{where} order by model, version desc",
                    [model] if model else [],
                )
                return pl.from_arrow(rel.fetch_arrow_table())
        except (duckdb.CatalogException, ModelVersionNotFoundError):
            return pl.DataFrame(
                schema={"model": pl.Utf8, "version": pl.Int32, "size_bytes": pl.Int64}
            )

    def latest_record(self, model: str) -> dict[str, Any]:
        """The newest version of ``model`` without its payload: version, created_at, size_bytes,
        params, metrics, info (dicts)."""
        versions = self.versions(model)
        if versions.height == 0:
            raise ModelVersionNotFoundError(
                f"model '{model}' has no stored version in {self.database} (none stored)"
            )
        row = versions.row(0, named=True)
        return {
            "version": int(row["version"]),
            "created_at": row["created_at"],
            "size_bytes": int(row["size_bytes"]),
            **{k: _json_dict(row[k]) for k in ("params", "metrics", "info")},
        }

    def _versions_text(self, model: str) -> str:
        versions = self.versions(model)
        if versions.height == 0:
            return "none stored"
        return "stored versions: " + ", ".join(map(str, sorted(versions["version"].to_list())))


def _json_dict(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) and value else dict(value or {})


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)
