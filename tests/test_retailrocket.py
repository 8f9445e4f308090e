"""RetailRocket reader/validator on tiny hand-written files: every bad input is a row of one
table that names the file, row and column of the error and a fragment of its message."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import polars as pl
import pytest

from recsys_assets.core.data.retailrocket import (
    ReadReport,
    RetailRocketFormatError,
    read_category_tree,
    read_events,
    read_item_properties,
    validate_raw_dir,
)
from recsys_assets.core.data.schemas import (
    RAW_CATEGORY_TREE_SCHEMA,
    RAW_EVENTS_SCHEMA,
    RAW_PROPERTIES_SCHEMA,
)

EVENTS_HEADER = "timestamp,visitorid,event,itemid,transactionid"
GOOD_EVENTS = [
    "1433221332117,257597,view,355908,",
    "1433224214164,992329,view,248676,",
    "1433221999827,111016,addtocart,318965,",
    "1433222147345,111016,transaction,318965,4000",
]
PROPS_HEADER = "timestamp,itemid,property,value"
GOOD_PROPS = [
    "1435460400000,460429,categoryid,1338",
    "1441508400000,206783,888,1116713 960601 n277.200",
    "1439089200000,395014,790,n552.000",
    "1431226800000,59481,available,1",
]
TREE_HEADER = "categoryid,parentid"
GOOD_TREE = ["1016,213", "809,169", "570,9", "213,", "169,", "9,"]


def write(path: Path, header: str | None, rows: list[str]) -> Path:
    lines = ([header] if header is not None else []) + rows
    path.write_text("".join(line + "\n" for line in lines))
    return path


def events_file(tmp_path: Path, rows: list[str], header: str = EVENTS_HEADER) -> Path:
    return write(tmp_path / "events.csv", header, rows)


# --- happy paths ---------------------------------------------------------------------------------


def test_read_events_types_and_values(tmp_path):
    df, report = read_events(events_file(tmp_path, GOOD_EVENTS))
    assert df.schema == pl.Schema(RAW_EVENTS_SCHEMA)
    assert report == ReadReport(str(tmp_path / "events.csv"), 4, 0, 4)
    assert df["transactionid"].to_list() == [None, None, None, 4000]
    assert df["timestamp"][0] == 1433221332117


def test_duplicates_are_dropped_and_counted(tmp_path):
    rows = [GOOD_EVENTS[0], GOOD_EVENTS[1], GOOD_EVENTS[0], GOOD_EVENTS[3], GOOD_EVENTS[0]]
    df, report = read_events(events_file(tmp_path, rows))
    assert (report.rows_read, report.duplicates_dropped, report.rows) == (5, 2, 3)
    assert df.height == 3
    assert df["visitorid"].to_list() == [257597, 992329, 111016]  # first occurrences, in order


def test_columns_in_another_order_are_accepted(tmp_path):
    path = write(
        tmp_path / "events.csv",
        "event,itemid,timestamp,visitorid,transactionid",
        ["view,5,1433221332117,7,"],
    )
    df, _ = read_events(path)
    assert df.columns == list(RAW_EVENTS_SCHEMA)
    assert df.row(0) == (1433221332117, 7, "view", 5, None)


def test_crlf_line_endings(tmp_path):
    path = tmp_path / "events.csv"
    path.write_bytes(("\r\n".join([EVENTS_HEADER, *GOOD_EVENTS]) + "\r\n").encode())
    df, _ = read_events(path)
    assert df["transactionid"].to_list()[-1] == 4000
    assert df["event"].to_list()[-1] == "transaction"


def test_read_item_properties_concatenates_files(tmp_path):
    p1 = write(tmp_path / "item_properties_part1.csv", PROPS_HEADER, GOOD_PROPS[:2])
    p2 = write(
        tmp_path / "item_properties_part2.csv", PROPS_HEADER, GOOD_PROPS[2:] + GOOD_PROPS[2:]
    )
    df, reports = read_item_properties([p1, p2])
    assert df.schema == pl.Schema(RAW_PROPERTIES_SCHEMA)
    assert df["property"].to_list() == ["categoryid", "888", "790", "available"]
    assert df["value"][1] == "1116713 960601 n277.200"
    assert [(r.rows_read, r.duplicates_dropped, r.rows) for r in reports] == [(2, 0, 2), (4, 2, 2)]


def test_read_item_properties_filter(tmp_path):
    path = write(tmp_path / "item_properties_part1.csv", PROPS_HEADER, GOOD_PROPS + GOOD_PROPS[2:3])
    df, reports = read_item_properties([path], properties={"790", "available"})
    assert sorted(df["property"].to_list()) == ["790", "available"]
    assert [(r.rows_read, r.duplicates_dropped, r.rows) for r in reports] == [(3, 1, 2)]


def test_read_category_tree(tmp_path):
    path = write(tmp_path / "category_tree.csv", TREE_HEADER, GOOD_TREE + ["1016,213"])
    df, report = read_category_tree(path)
    assert df.schema == pl.Schema(RAW_CATEGORY_TREE_SCHEMA)
    assert (report.rows_read, report.duplicates_dropped, report.rows) == (7, 1, 6)
    assert df.filter(pl.col("parentid").is_null())["categoryid"].sort().to_list() == [9, 169, 213]


def test_validate_raw_dir_ok(tmp_path):
    events_file(tmp_path, GOOD_EVENTS)
    write(tmp_path / "item_properties_part1.csv", PROPS_HEADER, GOOD_PROPS)
    write(tmp_path / "item_properties_part2.csv", PROPS_HEADER, GOOD_PROPS)
    write(tmp_path / "category_tree.csv", TREE_HEADER, GOOD_TREE)
    validate_raw_dir(tmp_path)  # no error


def test_timestamps_of_any_period_are_accepted(tmp_path):
    """Milliseconds are told from seconds by magnitude, not by a calendar window: a real data set
    from 1997 (874724710000 ms) and one from 2100 are read as they are."""
    rows = [
        "874724710000,1,view,10,",
        "100000000000,2,view,11,",  # 1973-03-03, the smallest value read as milliseconds
        "4102444800000,3,view,12,",
        "99999999999999,4,view,13,",
    ]
    events, _ = read_events(events_file(tmp_path, rows))
    assert events["timestamp"].to_list() == [874724710000, 10**11, 4102444800000, 10**14 - 1]


def test_parent_not_listed_is_accepted(tmp_path):
    df, _ = read_category_tree(write(tmp_path / "category_tree.csv", TREE_HEADER, ["5,99", "6,5"]))
    assert df.height == 2


# --- bad input: one table, each row checked for file, row, column and message --------------------


def _text(header: str | None, rows: list[str]) -> str:
    return "".join(line + "\n" for line in ([header] if header is not None else []) + rows)


def _events(rows: list[str], header: str = EVENTS_HEADER) -> dict[str, str]:
    return {"events.csv": _text(header, rows)}


def _props(name: str, rows: list[str]) -> dict[str, str]:
    return {name: _text(PROPS_HEADER, rows)}


def _tree(rows: list[str], header: str = TREE_HEADER) -> dict[str, str]:
    return {"category_tree.csv": _text(header, rows)}


PART1, PART2 = "item_properties_part1.csv", "item_properties_part2.csv"
RAW_DIR = {
    **_events(GOOD_EVENTS),
    **_props(PART1, GOOD_PROPS),
    **_props(PART2, GOOD_PROPS),
    **_tree(GOOD_TREE),
}
# What each case calls on the folder it writes.
READERS = {
    "events": lambda d: read_events(d / "events.csv"),
    "properties": lambda d: read_item_properties(sorted(d.glob("item_properties_part*.csv"))),
    "properties 790": lambda d: read_item_properties(
        sorted(d.glob("item_properties_part*.csv")), {"790"}
    ),
    "tree": lambda d: read_category_tree(d / "category_tree.csv"),
    "raw dir": validate_raw_dir,
}


class Bad(NamedTuple):
    case: str
    reader: str
    files: dict[str, str]  # the folder's files; absent ones are missing
    file: str
    row: int | None
    column: str | None
    message: str


BAD_INPUT = [
    # files and headers
    Bad("missing file", "events", {}, "events.csv", None, None, "file not found"),
    Bad(
        "raw dir names the missing file",
        "raw dir",
        {k: v for k, v in RAW_DIR.items() if k != PART2},
        PART2,
        None,
        None,
        "file not found",
    ),
    Bad(
        "raw dir checks headers",
        "raw dir",
        {**RAW_DIR, **_tree(GOOD_TREE, "categoryid,parent")},
        "category_tree.csv",
        1,
        "parentid",
        "missing column 'parentid'",
    ),
    Bad(
        "raw dir rejects a header-only file",
        "raw dir",
        {**RAW_DIR, **_events([])},
        "events.csv",
        None,
        None,
        "header but no data rows",
    ),
    Bad(
        "zero-byte file",
        "events",
        {"events.csv": ""},
        "events.csv",
        None,
        None,
        "empty (zero bytes)",
    ),
    Bad(
        "header-only events",
        "events",
        _events([]),
        "events.csv",
        None,
        None,
        "header but no data rows",
    ),
    Bad(
        "header-only category tree",
        "tree",
        _tree([]),
        "category_tree.csv",
        None,
        None,
        "header but no data rows",
    ),
    Bad(
        "missing column",
        "events",
        _events(["1433221332117,257597,view,355908"], "timestamp,visitorid,event,itemid"),
        "events.csv",
        1,
        "transactionid",
        "missing column 'transactionid'",
    ),
    Bad(
        "renamed column",
        "events",
        _events(GOOD_EVENTS, "timestamp,visitor_id,event,itemid,transactionid"),
        "events.csv",
        1,
        "visitorid",
        "missing column 'visitorid'",
    ),
    Bad(
        "extra column",
        "events",
        _events([r + ",x" for r in GOOD_EVENTS], EVENTS_HEADER + ",extra"),
        "events.csv",
        1,
        "extra",
        "unexpected column 'extra'",
    ),
    Bad(
        "row with too many fields",
        "events",
        _events([GOOD_EVENTS[0], GOOD_EVENTS[1] + ",oops", GOOD_EVENTS[2]]),
        "events.csv",
        3,
        None,
        "6 fields, expected 5",
    ),
    # bad values in events.csv (row numbers are file lines: the header is row 1)
    Bad(
        "blank lines keep file line numbers",
        "events",
        {"events.csv": f"{EVENTS_HEADER}\n{GOOD_EVENTS[0]}\n\n1433221332117,x,view,1,\n\n"},
        "events.csv",
        4,
        "visitorid",
        "'x' is not a numeric id",
    ),
    Bad(
        "non-numeric visitorid",
        "events",
        _events([*GOOD_EVENTS[:3], "1433221332117,abc,view,355908,"]),
        "events.csv",
        5,
        "visitorid",
        "'abc' is not a numeric id",
    ),
    Bad(
        "non-numeric itemid",
        "events",
        _events([*GOOD_EVENTS[:3], "1433221332117,257597,view,12.5,"]),
        "events.csv",
        5,
        "itemid",
        "'12.5' is not a numeric id",
    ),
    Bad(
        "non-numeric transactionid",
        "events",
        _events([*GOOD_EVENTS[:3], "1433221332117,257597,transaction,355908,tx9"]),
        "events.csv",
        5,
        "transactionid",
        "'tx9' is not a numeric id",
    ),
    Bad(
        "negative id",
        "events",
        _events(["1433221332117,-4,view,355908,"]),
        "events.csv",
        2,
        "visitorid",
        "(negative)",
    ),
    Bad(
        "empty id",
        "events",
        _events([GOOD_EVENTS[0], "1433221332117,257597,view,,"]),
        "events.csv",
        3,
        "itemid",
        "empty value",
    ),
    Bad(
        "non-numeric timestamp",
        "events",
        _events([*GOOD_EVENTS[:2], "abc,257597,view,355908,"]),
        "events.csv",
        4,
        "timestamp",
        "'abc' is not a Unix timestamp in milliseconds",
    ),
    Bad(
        "timestamp in seconds",
        "events",
        _events([GOOD_EVENTS[0], "1433221332,257597,view,355908,"]),
        "events.csv",
        3,
        "timestamp",
        "seconds instead of ms",
    ),
    Bad(
        "timestamp in microseconds",
        "events",
        _events(["1433221332117000,257597,view,355908,"]),
        "events.csv",
        2,
        "timestamp",
        "micro- or nanoseconds instead of ms",
    ),
    Bad(
        "unknown event type",
        "events",
        _events([GOOD_EVENTS[0], "1433221332117,257597,click,355908,"]),
        "events.csv",
        3,
        "event",
        "'click' is not an event type",
    ),
    Bad(
        "transaction without transactionid",
        "events",
        _events([GOOD_EVENTS[0], "1433221332117,257597,transaction,355908,"]),
        "events.csv",
        3,
        "transactionid",
        "transaction without a transactionid",
    ),
    Bad(
        "transactionid on a view",
        "events",
        _events(["1433221332117,257597,view,355908,17"]),
        "events.csv",
        2,
        "transactionid",
        "only transactions carry one",
    ),
    Bad(
        "first bad row wins across columns",
        "events",
        _events([GOOD_EVENTS[0], "1433221332117,257597,click,355908,", "x,1,view,1,"]),
        "events.csv",
        3,
        "event",
        "'click'",
    ),
    # item properties
    Bad(
        "properties bad timestamp",
        "properties",
        _props(PART2, [GOOD_PROPS[0], "1435460400,460429,categoryid,1338"]),
        PART2,
        3,
        "timestamp",
        "'1435460400' is not a Unix timestamp",
    ),
    Bad(
        "properties non-numeric itemid",
        "properties",
        _props(PART1, ["1435460400000,item7,categoryid,1338"]),
        PART1,
        2,
        "itemid",
        "'item7' is not a numeric id",
    ),
    Bad(
        "filtered read still rejects rows of other properties",
        "properties 790",
        _props(PART1, [*GOOD_PROPS, "1431226800000,x,888,1"]),
        PART1,
        6,
        "itemid",
        "'x' is not a numeric id",
    ),
    Bad(
        "filtered read reports original line numbers",
        "properties 790",
        _props(PART1, [*GOOD_PROPS, "99,460429,790,n1.000"]),
        PART1,
        6,
        "timestamp",
        "'99' is not a Unix timestamp in milliseconds",
    ),
    # category tree
    Bad(
        "non-numeric parentid",
        "tree",
        _tree(["1016,213", "213,", "5,root"]),
        "category_tree.csv",
        4,
        "parentid",
        "'root' is not a numeric id",
    ),
    Bad(
        "non-numeric categoryid",
        "tree",
        _tree(["1016,213", "cat,", "213,"]),
        "category_tree.csv",
        3,
        "categoryid",
        "'cat' is not a numeric id",
    ),
    Bad(
        "category listed twice with different parents",
        "tree",
        _tree(["1016,213", "213,", "169,", "1016,213", "1016,169"]),
        "category_tree.csv",
        6,
        "parentid",
        "category 1016 is listed twice with different parents (213 on row 2, 169 here)",
    ),
    # 1 is a fine root with child 2; 3 -> 4 -> 5 -> 3 is a cycle, 6 hangs below it
    Bad(
        "cycle names a row on the cycle",
        "tree",
        _tree(["1,", "2,1", "6,3", "4,5", "3,4", "5,3"]),
        "category_tree.csv",
        5,
        "parentid",
        "category 4 is in a parent cycle: 4 -> 5 -> 3 -> 4",
    ),
    Bad(
        "self-parent is a cycle",
        "tree",
        _tree(["1,", "7,7"]),
        "category_tree.csv",
        3,
        "parentid",
        "category 7 is in a parent cycle: 7 -> 7",
    ),
]


@pytest.mark.parametrize("bad", BAD_INPUT, ids=[bad.case for bad in BAD_INPUT])
def test_bad_input_names_file_row_and_column(tmp_path, bad):
    for name, text in bad.files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(RetailRocketFormatError) as info:
        READERS[bad.reader](tmp_path)
    err = info.value
    assert (Path(err.file).name, err.row, err.column) == (bad.file, bad.row, bad.column)
    assert bad.message in err.reason
    where = bad.file + (f", row {bad.row}" if bad.row is not None else "")
    where += f", column '{bad.column}'" if bad.column is not None else ""
    assert str(err).endswith(f"{where}: {err.reason}")


def test_error_is_a_value_error_and_pickles():
    import pickle

    err = RetailRocketFormatError("events.csv", 3, "event", "bad")
    assert isinstance(err, ValueError)
    back = pickle.loads(pickle.dumps(err))
    assert (back.file, back.row, back.column, back.reason) == ("events.csv", 3, "event", "bad")
    assert str(back) == "events.csv, row 3, column 'event': bad"
