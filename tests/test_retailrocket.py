"""RetailRocket reader/validator on tiny hand-written files: every bad input has its own test
that checks file, row and column of the error."""

from __future__ import annotations

from pathlib import Path

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


def expect_error(fn, *args, file: str, row: int | None, column: str | None, text: str):
    with pytest.raises(RetailRocketFormatError) as info:
        fn(*args)
    err = info.value
    assert Path(err.file).name == file
    assert err.row == row
    assert err.column == column
    assert text in err.reason
    where = file + (f", row {row}" if row is not None else "")
    where += f", column '{column}'" if column is not None else ""
    assert where in str(err)
    return err


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


def test_blank_lines_are_ignored_and_rows_keep_file_line_numbers(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(EVENTS_HEADER + "\n" + GOOD_EVENTS[0] + "\n\n" + "1433221332117,x,view,1,\n\n")
    # header=1, good=2, blank=3, bad=4
    expect_error(read_events, path, file="events.csv", row=4, column="visitorid", text="'x'")


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


def test_filtered_read_still_rejects_unparsable_rows_of_other_properties(tmp_path):
    rows = [*GOOD_PROPS, "1431226800000,x,888,1"]  # bad itemid on line 6, a filtered-out property
    path = write(tmp_path / "item_properties_part1.csv", PROPS_HEADER, rows)
    expect_error(
        read_item_properties,
        [path],
        {"790"},
        file="item_properties_part1.csv",
        row=6,
        column="itemid",
        text="'x' is not a numeric id",
    )


def test_filtered_read_reports_original_line_numbers(tmp_path):
    rows = [*GOOD_PROPS, "99,460429,790,n1.000"]  # bad timestamp on line 6 of a kept property
    path = write(tmp_path / "item_properties_part1.csv", PROPS_HEADER, rows)
    expect_error(
        read_item_properties,
        [path],
        {"790"},
        file="item_properties_part1.csv",
        row=6,
        column="timestamp",
        text="'99' is not a Unix timestamp in milliseconds",
    )


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


# --- missing / empty files and headers -----------------------------------------------------------


def test_missing_file(tmp_path):
    expect_error(
        read_events,
        tmp_path / "events.csv",
        file="events.csv",
        row=None,
        column=None,
        text="file not found",
    )


def test_validate_raw_dir_names_the_missing_file(tmp_path):
    events_file(tmp_path, GOOD_EVENTS)
    write(tmp_path / "item_properties_part1.csv", PROPS_HEADER, GOOD_PROPS)
    write(tmp_path / "category_tree.csv", TREE_HEADER, GOOD_TREE)
    expect_error(
        validate_raw_dir,
        tmp_path,
        file="item_properties_part2.csv",
        row=None,
        column=None,
        text="file not found",
    )


def test_validate_raw_dir_checks_headers(tmp_path):
    events_file(tmp_path, GOOD_EVENTS)
    write(tmp_path / "item_properties_part1.csv", PROPS_HEADER, GOOD_PROPS)
    write(tmp_path / "item_properties_part2.csv", PROPS_HEADER, GOOD_PROPS)
    write(tmp_path / "category_tree.csv", "categoryid,parent", GOOD_TREE)
    expect_error(
        validate_raw_dir,
        tmp_path,
        file="category_tree.csv",
        row=1,
        column="parentid",
        text="missing column 'parentid'",
    )


def test_validate_raw_dir_rejects_header_only_file(tmp_path):
    events_file(tmp_path, [])
    write(tmp_path / "item_properties_part1.csv", PROPS_HEADER, GOOD_PROPS)
    write(tmp_path / "item_properties_part2.csv", PROPS_HEADER, GOOD_PROPS)
    write(tmp_path / "category_tree.csv", TREE_HEADER, GOOD_TREE)
    expect_error(
        validate_raw_dir,
        tmp_path,
        file="events.csv",
        row=None,
        column=None,
        text="header but no data rows",
    )


def test_zero_byte_file(tmp_path):
    path = tmp_path / "events.csv"
    path.write_bytes(b"")
    expect_error(
        read_events, path, file="events.csv", row=None, column=None, text="empty (zero bytes)"
    )


def test_header_only_file(tmp_path):
    expect_error(
        read_events,
        events_file(tmp_path, []),
        file="events.csv",
        row=None,
        column=None,
        text="header but no data rows",
    )


def test_header_only_category_tree(tmp_path):
    path = write(tmp_path / "category_tree.csv", TREE_HEADER, [])
    expect_error(
        read_category_tree,
        path,
        file="category_tree.csv",
        row=None,
        column=None,
        text="header but no data rows",
    )


def test_missing_column(tmp_path):
    path = events_file(
        tmp_path, ["1433221332117,257597,view,355908"], header="timestamp,visitorid,event,itemid"
    )
    expect_error(
        read_events,
        path,
        file="events.csv",
        row=1,
        column="transactionid",
        text="missing column 'transactionid'",
    )


def test_renamed_column(tmp_path):
    path = events_file(
        tmp_path, GOOD_EVENTS, header="timestamp,visitor_id,event,itemid,transactionid"
    )
    expect_error(
        read_events,
        path,
        file="events.csv",
        row=1,
        column="visitorid",
        text="missing column 'visitorid'",
    )


def test_extra_column(tmp_path):
    path = events_file(tmp_path, [r + ",x" for r in GOOD_EVENTS], header=EVENTS_HEADER + ",extra")
    expect_error(
        read_events,
        path,
        file="events.csv",
        row=1,
        column="extra",
        text="unexpected column 'extra'",
    )


def test_row_with_too_many_fields(tmp_path):
    rows = [GOOD_EVENTS[0], GOOD_EVENTS[1] + ",oops", GOOD_EVENTS[2]]
    expect_error(
        read_events,
        events_file(tmp_path, rows),
        file="events.csv",
        row=3,
        column=None,
        text="6 fields, expected 5",
    )


# --- bad values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "column, row_text, shown",
    [
        ("visitorid", "1433221332117,abc,view,355908,", "'abc'"),
        ("itemid", "1433221332117,257597,view,12.5,", "'12.5'"),
        ("transactionid", "1433221332117,257597,transaction,355908,tx9", "'tx9'"),
    ],
)
def test_non_numeric_event_ids(tmp_path, column, row_text, shown):
    rows = [*GOOD_EVENTS[:3], row_text]
    expect_error(
        read_events,
        events_file(tmp_path, rows),
        file="events.csv",
        row=5,
        column=column,
        text=f"{shown} is not a numeric id",
    )


def test_negative_id(tmp_path):
    rows = ["1433221332117,-4,view,355908,"]
    expect_error(
        read_events,
        events_file(tmp_path, rows),
        file="events.csv",
        row=2,
        column="visitorid",
        text="(negative)",
    )


def test_empty_id(tmp_path):
    rows = [GOOD_EVENTS[0], "1433221332117,257597,view,,"]
    expect_error(
        read_events,
        events_file(tmp_path, rows),
        file="events.csv",
        row=3,
        column="itemid",
        text="empty value",
    )


def test_non_numeric_timestamp(tmp_path):
    rows = [*GOOD_EVENTS[:2], "abc,257597,view,355908,"]
    err = expect_error(
        read_events,
        events_file(tmp_path, rows),
        file="events.csv",
        row=4,
        column="timestamp",
        text="is not a Unix timestamp in milliseconds",
    )
    assert str(err).endswith(
        "events.csv, row 4, column 'timestamp': 'abc' is not a Unix timestamp in milliseconds"
    )


def test_timestamp_in_seconds(tmp_path):
    rows = [GOOD_EVENTS[0], "1433221332,257597,view,355908,"]
    expect_error(
        read_events,
        events_file(tmp_path, rows),
        file="events.csv",
        row=3,
        column="timestamp",
        text="seconds instead of ms",
    )


def test_timestamp_in_microseconds(tmp_path):
    rows = ["1433221332117000,257597,view,355908,"]
    expect_error(
        read_events,
        events_file(tmp_path, rows),
        file="events.csv",
        row=2,
        column="timestamp",
        text="micro- or nanoseconds instead of ms",
    )


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


def test_unknown_event_type(tmp_path):
    rows = [GOOD_EVENTS[0], "1433221332117,257597,click,355908,"]
    expect_error(
        read_events,
        events_file(tmp_path, rows),
        file="events.csv",
        row=3,
        column="event",
        text="'click' is not an event type",
    )


def test_transaction_without_transactionid(tmp_path):
    rows = [GOOD_EVENTS[0], "1433221332117,257597,transaction,355908,"]
    expect_error(
        read_events,
        events_file(tmp_path, rows),
        file="events.csv",
        row=3,
        column="transactionid",
        text="transaction without a transactionid",
    )


def test_transactionid_on_a_view_is_rejected(tmp_path):
    rows = ["1433221332117,257597,view,355908,17"]
    expect_error(
        read_events,
        events_file(tmp_path, rows),
        file="events.csv",
        row=2,
        column="transactionid",
        text="only transactions carry one",
    )


def test_first_bad_row_wins_across_columns(tmp_path):
    rows = [GOOD_EVENTS[0], "1433221332117,257597,click,355908,", "x,1,view,1,"]
    expect_error(
        read_events,
        events_file(tmp_path, rows),
        file="events.csv",
        row=3,
        column="event",
        text="'click'",
    )


def test_properties_bad_timestamp(tmp_path):
    path = write(
        tmp_path / "item_properties_part2.csv",
        PROPS_HEADER,
        [GOOD_PROPS[0], "1435460400,460429,categoryid,1338"],
    )
    expect_error(
        read_item_properties,
        [path],
        file="item_properties_part2.csv",
        row=3,
        column="timestamp",
        text="'1435460400' is not a Unix timestamp",
    )


def test_properties_non_numeric_itemid(tmp_path):
    path = write(
        tmp_path / "item_properties_part1.csv",
        PROPS_HEADER,
        ["1435460400000,item7,categoryid,1338"],
    )
    expect_error(
        read_item_properties,
        [path],
        file="item_properties_part1.csv",
        row=2,
        column="itemid",
        text="'item7' is not a numeric id",
    )


def test_category_tree_non_numeric_ids(tmp_path):
    path = write(tmp_path / "category_tree.csv", TREE_HEADER, ["1016,213", "213,", "5,root"])
    expect_error(
        read_category_tree,
        path,
        file="category_tree.csv",
        row=4,
        column="parentid",
        text="'root' is not a numeric id",
    )
    path = write(tmp_path / "category_tree.csv", TREE_HEADER, ["1016,213", "cat,", "213,"])
    expect_error(
        read_category_tree,
        path,
        file="category_tree.csv",
        row=3,
        column="categoryid",
        text="'cat' is not a numeric id",
    )


# --- category tree structure ---------------------------------------------------------------------


def test_category_listed_twice_with_different_parents(tmp_path):
    path = write(
        tmp_path / "category_tree.csv",
        TREE_HEADER,
        ["1016,213", "213,", "169,", "1016,213", "1016,169"],
    )
    err = expect_error(
        read_category_tree,
        path,
        file="category_tree.csv",
        row=6,
        column="parentid",
        text="category 1016 is listed twice",
    )
    assert "213 on row 2" in err.reason


def test_category_cycle_names_a_row_on_the_cycle(tmp_path):
    # 1 is a fine root with child 2; 3 -> 4 -> 5 -> 3 is a cycle, 6 hangs below it.
    rows = ["1,", "2,1", "6,3", "4,5", "3,4", "5,3"]
    err = expect_error(
        read_category_tree,
        write(tmp_path / "category_tree.csv", TREE_HEADER, rows),
        file="category_tree.csv",
        row=5,
        column="parentid",
        text="parent cycle",
    )
    assert "category 4 is in a parent cycle: 4 -> 5 -> 3 -> 4" in err.reason


def test_category_self_parent_is_a_cycle(tmp_path):
    path = write(tmp_path / "category_tree.csv", TREE_HEADER, ["1,", "7,7"])
    expect_error(
        read_category_tree,
        path,
        file="category_tree.csv",
        row=3,
        column="parentid",
        text="category 7 is in a parent cycle: 7 -> 7",
    )


def test_parent_not_listed_is_accepted(tmp_path):
    df, _ = read_category_tree(write(tmp_path / "category_tree.csv", TREE_HEADER, ["5,99", "6,5"]))
    assert df.height == 2


def test_error_is_a_value_error_and_pickles():
    import pickle

    err = RetailRocketFormatError("events.csv", 3, "event", "bad")
    assert isinstance(err, ValueError)
    back = pickle.loads(pickle.dumps(err))
    assert (back.file, back.row, back.column, back.reason) == ("events.csv", 3, "event", "bad")
    assert str(back) == "events.csv, row 3, column 'event': bad"
