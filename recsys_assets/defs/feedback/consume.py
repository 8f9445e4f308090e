"""Consume the ``{prefix}:feedback`` stream into DuckDB exactly once.

The last consumed stream id is stored in ``recsys.feedback_offsets`` in the same DuckDB
transaction as the rows it covers: a run that fails after reading (Redis gone mid-read, DuckDB
error, process killed) commits neither, so the next run reads the same entries again, and a
re-run after a success starts after the stored id, so nothing is counted twice. The
``(stream, stream_id)`` primary key of ``feedback_events`` refuses a duplicate even if the
offset were lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import polars as pl

from recsys_assets.core.experiments.online import RejectedEntry, feedback_frame

START = "0-0"
PAGE = 10_000  # entries per XRANGE call: bounded replies, a few round trips per 100k


@dataclass
class ConsumeReport:
    stream: str
    previous_id: str
    last_id: str
    read: int = 0
    stored: int = 0
    rejected: list[RejectedEntry] = field(default_factory=list)
    days: list[str] = field(default_factory=list)
    by_event: dict[str, int] = field(default_factory=dict)
    # Entries Redis dropped (MAXLEN trimming, a restart without persistence) before they were
    # read; None when this run stopped at max_entries and could not tell.
    lost_entries: int | None = 0


def ensure_tables(conn: duckdb.DuckDBPyConnection, schema: str) -> None:
    conn.execute(f"create schema if not exists {schema}")
    conn.execute(
        f"""create table if not exists {schema}.feedback_events (
            stream varchar not null, stream_id varchar not null, day date not null,
            "timestamp" bigint not null, user_id bigint not null, item_id bigint not null,
            event varchar not null, model varchar, version varchar, experiment varchar,
            arm varchar, rank integer, primary key (stream, stream_id))"""
    )
    conn.execute(
        f"""create table if not exists {schema}.feedback_offsets (
            -- consumed: entries read or known lost (for the lost-entry count of the next run)
            stream varchar primary key, last_id varchar not null, consumed bigint not null,
            updated_at timestamp not null)"""
    )


def stored_offset(conn: duckdb.DuckDBPyConnection, schema: str, stream: str) -> str:
    return _stored(conn, schema, stream)[0]


def _stored(conn: duckdb.DuckDBPyConnection, schema: str, stream: str) -> tuple[str, int]:
    """(last consumed id, entries consumed so far) of ``stream``."""
    row = conn.execute(
        f"select last_id, consumed from {schema}.feedback_offsets where stream = ?", [stream]
    ).fetchone()
    return (row[0], int(row[1])) if row else (START, 0)


def _store_offset(
    conn: duckdb.DuckDBPyConnection, schema: str, stream: str, last_id: str, read: int
) -> None:
    conn.execute(
        f"""insert into {schema}.feedback_offsets values (?, ?, ?, now())
            on conflict (stream) do update set last_id = excluded.last_id,
            consumed = feedback_offsets.consumed + excluded.consumed,
            updated_at = excluded.updated_at""",
        [stream, last_id, read],
    )


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_entries(client, stream: str, after: str, max_entries: int) -> list[tuple[bytes, dict]]:
    """Entries strictly after ``after``, oldest first, at most ``max_entries``."""
    entries: list[tuple[bytes, dict]] = []
    cursor = after
    while len(entries) < max_entries:
        page = client.xrange(
            stream, min=f"({cursor}", max="+", count=min(PAGE, max_entries - len(entries))
        )
        if not page:
            break
        entries.extend(page)
        cursor = _text(page[-1][0])
    return entries


def entries_added(client, stream: str) -> int:
    """How many entries were ever appended to ``stream`` (Redis 7 keeps the count through
    trimming); 0 when there is no stream yet."""
    try:
        info = client.xinfo_stream(stream)
    except Exception as exc:  # redis.ResponseError "no such key": nothing posted yet
        if "no such key" in str(exc).lower():
            return 0
        raise
    return int(info.get("entries-added", info.get(b"entries-added", 0)))


def consume_feedback(
    client,
    stream: str,
    conn: duckdb.DuckDBPyConnection,
    schema: str = "recsys",
    max_entries: int = 1_000_000,
) -> ConsumeReport:
    """Append the entries after the stored offset to ``{schema}.feedback_events`` and advance the
    offset, both in one transaction."""
    ensure_tables(conn, schema)
    offset, consumed = _stored(conn, schema, stream)
    report = ConsumeReport(stream=stream, previous_id=offset, last_id=offset)
    added = entries_added(client, stream)
    entries = read_entries(client, stream, offset, max_entries)
    # Every entry ever added was consumed before, is read now, or was dropped unread. (Counted
    # before the read: entries added meanwhile are read but not in `added`, hence the max.)
    report.lost_entries = (
        max(added - consumed - len(entries), 0) if len(entries) < max_entries else None
    )
    if not entries and not report.lost_entries:
        return report
    frame, report.rejected = feedback_frame(entries)
    frame = frame.with_columns(pl.lit(stream).alias("stream")).select("stream", *frame.columns)
    report.read, report.stored = len(entries), frame.height
    if entries:
        report.last_id = _text(entries[-1][0])
    report.days = sorted({str(d) for d in frame["day"].unique()})
    counts = frame.group_by("event").len().sort("event")
    report.by_event = dict(zip(counts["event"], counts["len"], strict=True))
    # Lost entries are accounted with the offset, so they are reported by one run only.
    accounted = report.read + (report.lost_entries or 0)
    conn.execute("begin transaction")
    try:
        conn.register("_feedback_batch", frame.to_arrow())
        conn.execute(f"insert into {schema}.feedback_events select * from _feedback_batch")
        _store_offset(conn, schema, stream, report.last_id, accounted)
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise
    finally:
        conn.unregister("_feedback_batch")
    return report
