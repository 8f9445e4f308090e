"""Reader and validator for the RetailRocket files (DESIGN.md §3).

Every reader validates the whole file before it returns, so a caller never writes half-valid
data. The happy path is one typed polars parse plus a handful of vectorised checks; only after
something fails do we spend time locating the first offending line, so a bad file costs a
second pass but a good one does not.

Decisions worth knowing:

* Line numbers are 1-based lines of the file; the header is line 1.
* Blank lines are ignored. Exact duplicate rows are dropped and counted, never fatal.
* Columns may come in any order, but the set of names must be exactly the documented one.
* ``transactionid`` is required on ``transaction`` events and rejected on any other event: the
  real file has none there, so one showing up means a shifted or mixed-up column.
* Timestamps must be Unix milliseconds. Seconds and microseconds are told apart by magnitude,
  not by a calendar window (real data sets go back to the 1990s): a value below 10^11 is
  seconds (10^11 s is the year 5138; 10^11 ms is 1973-03-03), one of 10^14 or more is micro- or
  nanoseconds (10^14 ms is the year 5138).
* In the category tree, a parent that is not itself listed is accepted (it becomes a root in
  :func:`recsys_assets.core.data.catalog.category_tree_table`); the same category listed with two
  different parents, or a cycle, is an error.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsys_assets.core.data.schemas import (
    CATEGORY_TREE_COLUMNS,
    CATEGORY_TREE_FILE,
    EVENT_TYPES,
    EVENTS_COLUMNS,
    EVENTS_FILE,
    PROPERTIES_COLUMNS,
    PROPERTIES_FILES,
    RAW_CATEGORY_TREE_SCHEMA,
    RAW_EVENTS_SCHEMA,
    RAW_PROPERTIES_SCHEMA,
)

# Magnitude bounds of a Unix timestamp in milliseconds (see the module docstring).
TIMESTAMP_MIN_MS = 10**11  # below: seconds (1997 in ms is 8.7e11, in seconds 8.7e8)
TIMESTAMP_MAX_MS = 10**14  # from here on: microseconds (2015 in µs is 1.4e15)

_LINE = "__line"  # 1-based file line, carried only when rows were filtered out before checking
_RAW = "__raw_"  # prefix of the untyped copy of a numeric column, kept only while diagnosing


class RetailRocketFormatError(ValueError):
    """A RetailRocket file that does not follow DESIGN.md §3.

    ``row`` is the 1-based line number in the file (header = line 1), ``None`` when the problem
    is the file as a whole; ``column`` is ``None`` when no single column is at fault.
    """

    def __init__(self, file: str | os.PathLike, row: int | None, column: str | None, reason: str):
        self.file = str(file)
        self.row = row
        self.column = column
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.column is not None:
            where += f", column '{self.column}'"
        return f"{where}: {self.reason}"

    def __reduce__(self):  # keep the error picklable (Dagster ships errors between processes)
        return (type(self), (self.file, self.row, self.column, self.reason))


@dataclass
class ReadReport:
    """What a reader did to one file. ``rows_read`` excludes the header and blank lines."""

    file: str
    rows_read: int
    duplicates_dropped: int
    rows: int


# --- headers -------------------------------------------------------------------------------------


def _read_header(path: Path) -> list[str]:
    if not path.is_file():
        raise RetailRocketFormatError(path, None, None, "file not found")
    with path.open("rb") as fh:
        first = fh.readline()
    if not first:
        raise RetailRocketFormatError(path, None, None, "file is empty (zero bytes)")
    line = first.decode("utf-8-sig", errors="replace").rstrip("\r\n")
    return next(csv.reader([line]), [])


def _check_header(path: Path, expected: Sequence[str]) -> None:
    header = _read_header(path)
    shown = ",".join(header)
    for name in expected:
        if name not in header:
            raise RetailRocketFormatError(
                path,
                1,
                name,
                f"missing column '{name}' (header is '{shown}', expected '{','.join(expected)}')",
            )
    for name in header:
        if name not in expected:
            raise RetailRocketFormatError(
                path, 1, name, f"unexpected column '{name}' (expected '{','.join(expected)}')"
            )
    if len(header) != len(set(header)):
        dup = next(n for n in header if header.count(n) > 1)
        raise RetailRocketFormatError(path, 1, dup, f"column '{dup}' appears twice")


def _has_data_line(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.readline()
        return any(line.strip() for line in fh)


def validate_raw_dir(raw_dir: str | os.PathLike) -> None:
    """Cheap pre-flight check: all four files exist, headers are right, none is empty.

    Reads only the first lines; the full value checks happen in the readers.
    """
    raw_dir = Path(raw_dir)
    expected = {
        EVENTS_FILE: EVENTS_COLUMNS,
        **{name: PROPERTIES_COLUMNS for name in PROPERTIES_FILES},
        CATEGORY_TREE_FILE: CATEGORY_TREE_COLUMNS,
    }
    for name, columns in expected.items():
        path = raw_dir / name
        _check_header(path, columns)
        if not _has_data_line(path):
            raise RetailRocketFormatError(path, None, None, "file has a header but no data rows")


# --- value checks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Check:
    column: str
    bad: pl.Expr  # True on offending rows
    reason: Callable[[dict], str]  # row (raw values where available) -> message


def _shown(value: object) -> str:
    return "''" if value is None else repr(str(value))


def _id_checks(column: str, nullable: bool, diagnosing: bool) -> list[_Check]:
    checks = []
    if not nullable:
        checks.append(
            _Check(
                column,
                pl.col(column).is_null() & _raw_is_null(column, diagnosing),
                lambda r: "empty value; a numeric id is required",
            )
        )
    if diagnosing:
        checks.append(
            _Check(
                column, _unparsed(column), lambda r, c=column: f"{_shown(r[c])} is not a numeric id"
            )
        )
    checks.append(
        _Check(
            column,
            pl.col(column) < 0,
            lambda r, c=column: f"{_shown(r[c])} is not a numeric id (negative)",
        )
    )
    return checks


def _timestamp_checks(diagnosing: bool) -> list[_Check]:
    col = "timestamp"

    def not_ms(r: dict) -> str:
        return f"{_shown(r[col])} is not a Unix timestamp in milliseconds"

    checks = [
        _Check(
            col,
            pl.col(col).is_null() & _raw_is_null(col, diagnosing),
            lambda r: "empty value; a Unix timestamp in milliseconds is required",
        )
    ]
    if diagnosing:
        checks.append(_Check(col, _unparsed(col), not_ms))
    checks.append(
        _Check(
            col,
            pl.col(col) < TIMESTAMP_MIN_MS,
            lambda r: f"{not_ms(r)} (below 10^11, so seconds instead of ms? multiply by 1000)",
        )
    )
    checks.append(
        _Check(
            col,
            pl.col(col) >= TIMESTAMP_MAX_MS,
            lambda r: f"{not_ms(r)} (10^14 or above, so micro- or nanoseconds instead of ms?)",
        )
    )
    return checks


def _raw_is_null(column: str, diagnosing: bool) -> pl.Expr:
    return pl.col(_RAW + column).is_null() if diagnosing else pl.lit(True)


def _unparsed(column: str) -> pl.Expr:
    return pl.col(_RAW + column).is_not_null() & pl.col(column).is_null()


def _events_checks(diagnosing: bool) -> list[_Check]:
    is_tx = pl.col("event") == "transaction"
    return [
        *_timestamp_checks(diagnosing),
        *_id_checks("visitorid", False, diagnosing),
        _Check(
            "event",
            pl.col("event").is_null(),
            lambda r: f"empty value; expected one of {', '.join(EVENT_TYPES)}",
        ),
        _Check(
            "event",
            ~pl.col("event").is_in(EVENT_TYPES),
            lambda r: (
                f"{_shown(r['event'])} is not an event type "
                f"(expected one of {', '.join(EVENT_TYPES)})"
            ),
        ),
        *_id_checks("itemid", False, diagnosing),
        *_id_checks("transactionid", True, diagnosing),
        _Check(
            "transactionid",
            is_tx & pl.col("transactionid").is_null(),
            lambda r: "transaction without a transactionid",
        ),
        _Check(
            "transactionid",
            ~is_tx & pl.col("transactionid").is_not_null(),
            lambda r: (
                f"transactionid {_shown(r['transactionid'])} on a {_shown(r['event'])} "
                "event; only transactions carry one"
            ),
        ),
    ]


def _properties_checks(diagnosing: bool) -> list[_Check]:
    return [
        *_timestamp_checks(diagnosing),
        *_id_checks("itemid", False, diagnosing),
        _Check(
            "property",
            pl.col("property").is_null(),
            lambda r: "empty value; a property name is required",
        ),
    ]


def _tree_checks(diagnosing: bool) -> list[_Check]:
    return [*_id_checks("categoryid", False, diagnosing), *_id_checks("parentid", True, diagnosing)]


# --- generic reader ------------------------------------------------------------------------------


def _int_columns(schema: dict) -> list[str]:
    return [name for name, dtype in schema.items() if dtype == pl.Int64]


def _scan(path: Path, schema: dict, typed: bool, with_line: bool) -> pl.LazyFrame:
    overrides = {name: (dtype if typed else pl.String) for name, dtype in schema.items()}
    return pl.scan_csv(
        path,
        infer_schema=False,
        schema_overrides=overrides,
        truncate_ragged_lines=False,
        row_index_name=_LINE if with_line else None,
        row_index_offset=2,
    )


def _drop_blank_lines(df: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    blank = pl.all_horizontal([pl.col(c).is_null() for c in columns])
    if not df.select(blank.any()).item():
        return df
    if _LINE not in df.columns:
        df = df.with_row_index(_LINE, offset=2)
    return df.filter(~blank)


def _first_failure(df: pl.DataFrame, checks: list[_Check]) -> tuple[int, _Check] | None:
    """Index of the earliest offending row and the first check it fails, or None."""
    firsts = df.select(
        [c.bad.fill_null(False).arg_true().first().alias(str(i)) for i, c in enumerate(checks)]
    ).row(0)
    found = [(idx, i) for i, idx in enumerate(firsts) if idx is not None]
    if not found:
        return None
    idx, i = min(found)
    return idx, checks[i]


def _raise_at(path: Path, df: pl.DataFrame, idx: int, check: _Check) -> None:
    row = df.row(idx, named=True)
    raw = {k[len(_RAW) :]: v for k, v in row.items() if k.startswith(_RAW)}
    line = row[_LINE] if _LINE in row else idx + 2
    raise RetailRocketFormatError(path, int(line), check.column, check.reason({**row, **raw}))


def _first_ragged_line(path: Path, n_fields: int) -> tuple[int, int] | None:
    # Error path only: polars does not say which line was ragged, so walk the file once.
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
        for line_no, fields in enumerate(csv.reader(fh), start=1):
            if fields and len(fields) != n_fields:
                return line_no, len(fields)
    return None


def _diagnose(
    path: Path,
    schema: dict,
    make_checks: Callable[[bool], list[_Check]],
    error: Exception,
) -> None:
    """The typed parse failed: re-read as text to find and report the first bad line."""
    ints = _int_columns(schema)
    try:
        # Unfiltered: a value that breaks the typed parse is fatal even in a row the caller's
        # filter would have dropped, so look for it everywhere.
        df = _scan(path, schema, typed=False, with_line=True).collect(engine="streaming")
    except pl.exceptions.PolarsError as text_error:
        ragged = _first_ragged_line(path, len(schema))
        if ragged is not None:
            raise RetailRocketFormatError(
                path, ragged[0], None, f"line has {ragged[1]} fields, expected {len(schema)}"
            ) from text_error
        raise RetailRocketFormatError(path, None, None, f"cannot parse: {text_error}") from error
    df = _drop_blank_lines(df, list(schema)).with_columns(
        [pl.col(c).alias(_RAW + c) for c in ints]
        + [pl.col(c).str.strip_chars().cast(pl.Int64, strict=False) for c in ints]
    )
    failure = _first_failure(df, make_checks(True))
    if failure is not None:
        _raise_at(path, df, *failure)
    raise RetailRocketFormatError(path, None, None, f"cannot parse: {error}") from error


def _read_validated(
    path: str | os.PathLike,
    schema: dict,
    make_checks: Callable[[bool], list[_Check]],
    keep: pl.Expr | None = None,
) -> tuple[pl.DataFrame, ReadReport]:
    path = Path(path)
    _check_header(path, list(schema))
    try:
        lf = _scan(path, schema, typed=True, with_line=keep is not None)
        if keep is not None:
            lf = lf.filter(keep)
        df = lf.collect(engine="streaming")
    except pl.exceptions.PolarsError as error:
        _diagnose(path, schema, make_checks, error)
        raise  # unreachable: _diagnose always raises
    df = _drop_blank_lines(df, list(schema))
    if df.height == 0 and keep is None:
        raise RetailRocketFormatError(path, None, None, "file has a header but no data rows")
    failure = _first_failure(df, make_checks(False))
    if failure is not None:
        _raise_at(path, df, *failure)
    rows_read = df.height
    df = drop_exact_duplicates(df.select(list(schema)))
    report = ReadReport(str(path), rows_read, rows_read - df.height, df.height)
    return df.cast(schema), report


def drop_exact_duplicates(df: pl.DataFrame) -> pl.DataFrame:
    """Keep the first of each group of identical rows, in file order.

    A plain order-keeping ``unique`` over 20M rows with strings takes several seconds; row
    hashes single out the few candidate rows cheaply and only those are compared exactly, so a
    hash collision can never drop a distinct row.
    """
    maybe = df.hash_rows().is_duplicated()
    if not maybe.any():
        return df
    index = "__row"
    candidates = df.with_row_index(index).filter(maybe)
    repeats = candidates.filter(~pl.struct(pl.exclude(index)).is_first_distinct())[index]
    if repeats.len() == 0:
        return df
    return df.with_row_index(index).filter(~pl.col(index).is_in(repeats.implode())).drop(index)


# --- public readers ------------------------------------------------------------------------------


def read_events(path: str | os.PathLike) -> tuple[pl.DataFrame, ReadReport]:
    """Read and validate ``events.csv``; exact duplicate rows are dropped and counted."""
    return _read_validated(path, RAW_EVENTS_SCHEMA, _events_checks)


def read_item_properties(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    properties: Collection[str] | None = None,
) -> tuple[pl.DataFrame, list[ReadReport]]:
    """Read and validate the item-property snapshot files, concatenated in the given order.

    ``properties`` keeps only those property names; the filter is pushed into the CSV scan, so
    rows of other properties are never materialised. Those rows are still parsed (a
    non-numeric timestamp or itemid anywhere is an error) but not range-checked, and
    ``rows_read`` then counts only the rows that passed the filter. Duplicates are dropped
    within each file.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    keep = None if properties is None else pl.col("property").is_in(sorted(set(properties)))
    frames, reports = [], []
    for path in paths:
        df, report = _read_validated(path, RAW_PROPERTIES_SCHEMA, _properties_checks, keep)
        frames.append(df)
        reports.append(report)
    if not frames:
        raise ValueError("read_item_properties needs at least one file")
    return pl.concat(frames, how="vertical"), reports


def read_category_tree(path: str | os.PathLike) -> tuple[pl.DataFrame, ReadReport]:
    """Read and validate ``category_tree.csv``: ids, one parent per category, no cycles."""
    path = Path(path)
    _check_header(path, CATEGORY_TREE_COLUMNS)
    # Small file (1,669 rows): keep line numbers so tree errors can name their row.
    try:
        df = _scan(path, RAW_CATEGORY_TREE_SCHEMA, typed=True, with_line=True).collect()
    except pl.exceptions.PolarsError as error:
        _diagnose(path, RAW_CATEGORY_TREE_SCHEMA, _tree_checks, error)
        raise
    df = _drop_blank_lines(df, CATEGORY_TREE_COLUMNS)
    if df.height == 0:
        raise RetailRocketFormatError(path, None, None, "file has a header but no data rows")
    failure = _first_failure(df, _tree_checks(False))
    if failure is not None:
        _raise_at(path, df, *failure)
    rows_read = df.height
    df = df.unique(subset=list(CATEGORY_TREE_COLUMNS), keep="first", maintain_order=True)
    validate_category_tree(df, file=path)
    out = df.select(list(CATEGORY_TREE_COLUMNS)).cast(RAW_CATEGORY_TREE_SCHEMA)
    return out, ReadReport(str(path), rows_read, rows_read - out.height, out.height)


# --- category tree structure ---------------------------------------------------------------------


def validate_category_tree(
    tree: pl.DataFrame, file: str | os.PathLike = CATEGORY_TREE_FILE
) -> None:
    """Each category has one parent and following parents always ends at a root.

    ``tree`` has ``categoryid``/``parentid`` (exact duplicates already removed) and optionally
    a ``__line`` column with file line numbers, used to name the offending row.
    """
    lines = tree[_LINE] if _LINE in tree.columns else pl.Series(_LINE, [None] * tree.height)
    df = tree.select("categoryid", "parentid").with_columns(lines.alias(_LINE))

    repeats = df.filter(~pl.col("categoryid").is_first_distinct())
    if repeats.height:
        second = repeats.row(0, named=True)
        cat = second["categoryid"]
        first = df.filter(pl.col("categoryid") == cat).row(0, named=True)
        raise RetailRocketFormatError(
            file,
            second[_LINE],
            "parentid",
            f"category {cat} is listed twice with different parents "
            f"({first['parentid']} on row {first[_LINE]}, {second['parentid']} here)",
        )

    # Reachability from the roots, one depth level per iteration (vectorised over rows);
    # whatever is never reached sits on a cycle or hangs below one.
    ids = df["categoryid"]
    reached = df["parentid"].is_null() | ~df["parentid"].is_in(ids.implode())
    while True:
        grown = reached | df["parentid"].is_in(ids.filter(reached).implode())
        if grown.sum() == reached.sum():
            break
        reached = grown
    if reached.all():
        return
    _raise_cycle(df.filter(~reached), file)


def _raise_cycle(unreached: pl.DataFrame, file: str | os.PathLike) -> None:
    # Error path only, on the few unreached categories: walk parents until one repeats.
    parent = dict(zip(unreached["categoryid"], unreached["parentid"], strict=True))
    line = dict(zip(unreached["categoryid"], unreached[_LINE], strict=True))
    node, path = unreached["categoryid"][0], []
    while node not in path:
        path.append(node)
        node = parent[node]
    cycle = path[path.index(node) :]
    named = min(cycle, key=lambda c: (line[c] is None, line[c] or 0, c))
    start = cycle.index(named)
    loop = cycle[start:] + cycle[:start] + [named]
    raise RetailRocketFormatError(
        file,
        line[named],
        "parentid",
        f"category {named} is in a parent cycle: {' -> '.join(str(c) for c in loop)}",
    )


# --- days ----------------------------------------------------------------------------------------


def event_day(column: str = "timestamp") -> pl.Expr:
    """The UTC day (``YYYY-MM-DD``) of a Unix-millisecond column: the key of its daily partition."""
    return pl.from_epoch(pl.col(column), time_unit="ms").dt.strftime("%Y-%m-%d")


def event_days(path: str | os.PathLike) -> list[str]:
    """Every UTC day that holds an event of a validated ``events.csv``, sorted."""
    events, _ = read_events(path)
    return events.select(event_day().unique().sort())["timestamp"].to_list()
