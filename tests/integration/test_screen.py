"""The screen only errs on the side of suspicion: every value its patterns match is one
PostgreSQL's COPY accepts for the type (checked against the real server), and a record it
does not match is handed back whole, never dropped."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.config import Settings
from importd.imports import store
from importd.imports.copy import scan, screen

TYPES = ["smallint", "integer", "bigint", "numeric", "numeric(14,2)", "numeric(5,0)", "real", "double precision",
         "boolean", "uuid", "date", "timestamp without time zone", "timestamp with time zone",
         "timestamp(3) with time zone", "character varying(5)", "character(3)", "text"]


@pytest.fixture(scope="module")
def conn(migrated: Settings) -> Any:
    with store.connect(migrated) as c:
        yield c


def copy_accepts(conn: psycopg.Connection[Any], pg_type: str, fields: list[bytes]) -> None:
    """COPY ``fields`` (CSV fields, one per row) into a one-column table of ``pg_type``."""
    conn.execute("DROP TABLE IF EXISTS pg_temp.screened")
    conn.execute(f"CREATE TEMP TABLE screened (v {pg_type})")  # type: ignore[arg-type] - the fixed list above
    with conn.cursor().copy("COPY screened FROM STDIN (FORMAT csv)") as copy:
        copy.write(b"".join(f + b"\n" for f in fields))


@pytest.mark.parametrize("pg_type", TYPES)
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_field_the_screen_matches_is_accepted_by_copy(conn, pg_type, data):
    pattern = screen.field_pattern(pg_type, False, b",")
    assert pattern is not None
    one_line = st.from_regex(pattern, fullmatch=True).filter(
        lambda f: b"\n" not in f and b"\r" not in f and utf8(f))  # one record per line
    fields = data.draw(st.lists(one_line, min_size=1, max_size=40))  # never empty: a COPY of nothing proves nothing
    assert fields
    copy_accepts(conn, pg_type, fields)


def utf8(field: bytes) -> bool:
    """The loader screens a batch only if it is valid UTF-8 as a whole (checked in C first)."""
    try:
        field.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize(("pg_type", "value"), [
    ("integer", b"1234567890"), ("integer", b" 1"), ("integer", b'""'), ("bigint", b"1e3"),
    ("numeric(14,2)", b"1.005"), ("numeric(14,2)", b"1234567890123"), ("boolean", b"o"),
    ("date", b"2024-02-29"), ("date", b"0000-01-01"), ("timestamp with time zone", b"2024-01-01 24:00:00"),
    ("timestamp with time zone", b"2024-13-01 00:00:00"), ("uuid", b"{12345678-1234-1234-1234-123456789012}"),
    ("character varying(5)", b"abcdef"), ("text", b"a\x00b"), ("text", b'a"b'), ("text", b'"a"b'),
])
def test_values_postgresql_may_refuse_are_suspects(pg_type, value):
    pattern = screen.field_pattern(pg_type, False, b",")
    assert pattern is not None
    assert re.fullmatch(pattern, value) is None


@pytest.mark.parametrize("pg_type", ["json", "integer[]", "interval", "numeric(2,2)", "bytea", "my_domain"])
def test_a_type_without_a_pattern_turns_screening_off(pg_type):
    assert screen.compile_rows([("integer", True), (pg_type, False)], ",", eol=b"\n") is None


def test_an_unquoted_empty_field_of_a_not_null_column_is_a_suspect():
    rows = screen.compile_rows([("integer", True), ("text", True)], ",", eol=b"\n")
    assert rows is not None
    suspects: list[tuple[int, int]] = []
    data = b'1,a\n2,\n3,""\n'
    good = b"".join(screen.split(rows, data, suspects))
    assert (good, suspects) == (b'1,a\n3,""\n', [(4, 7)])


def test_split_hands_back_every_record_either_as_good_or_as_a_suspect():
    rows = screen.compile_rows([("bigint", True), ("text", False), ("date", False)], ";", eol=b"\r\n")
    assert rows is not None
    records = [b'1;"multi\r\nline; ""quoted""";2024-01-02\r\n', b"2;x;2024-02-30\r\n", b"3;;\r\n",
               b"4;ragged\r\n", b"5;z;2024-01-01\r\n", b'6;"open quote;2024-01-01\r\n7;y;2024-01-01']
    data = b"".join(records)
    suspects: list[tuple[int, int]] = []
    good = b"".join(screen.split(rows, data, suspects))
    assert good == records[0] + records[2] + records[4]
    assert [data[s:e] for s, e in suspects] == [records[1], records[3], records[5]]  # an open quote runs on


def test_split_screens_window_by_window_and_loses_no_record_at_a_window_edge(monkeypatch):
    monkeypatch.setattr(screen, "WINDOW", 64)
    rows = screen.compile_rows([("integer", True), ("text", False)], ",", eol=b"\n")
    assert rows is not None
    records = [b"%d,%s\n" % (i, b"x" * (i % 37)) if i % 7 else b"%d,bad\x00\n" % i for i in range(200)]
    data = b"".join(records)
    suspects: list[tuple[int, int]] = []
    parts = list(screen.split(rows, data, suspects))
    assert len(parts) > 20  # yielded window by window, not once at the end
    assert b"".join(parts) == b"".join(r for i, r in enumerate(records) if i % 7)
    assert [data[s:e] for s, e in suspects] == [r for i, r in enumerate(records) if not i % 7]


#: Raw CSV fields of every kind the patterns meet: good and bad values of the screened types,
#: quoted fields with delimiters, doubled quotes and line breaks, stray quotes, NUL bytes.
RAW_FIELDS = st.sampled_from([b"1", b"-12", b"123456789012345678901", b"12.50", b'"7"', b"", b'""', b"x", b"1e3",
                              b"2024-02-28", b"2024-02-29", b"2024-13-01", b"2024-01-01 10:00:00+00",
                              b"2024-01-01T25:00:00", b"true", b"YES", b"maybe", b"plain", b'"a, b"',
                              b'"two\nlines"', b'"say ""hi"""', b'a"b', b'"open', b"a\x00b", b"\xc3\xa4\xc3\xb6",
                              b"abcdef"])
SCREENED_TYPES = [("bigint", True), ("numeric(8,2)", False), ("date", False), ("timestamp with time zone", False),
                  ("boolean", False), ("text", True), ("character varying(5)", False)]


@settings(max_examples=200, deadline=None)
@given(records=st.lists(st.lists(RAW_FIELDS, min_size=1, max_size=9), max_size=40),
       eol=st.sampled_from([b"\n", b"\r\n", b"\r"]), final_eol=st.booleans(), window=st.sampled_from([16, 64, 4096]))
def test_re2_and_python_re_screen_the_same_records(records, eol, final_eol, window):
    """The screen's two engines read one grammar: whatever the bytes, RE2 (the fast one) and
    Python's re (kept for patterns RE2 cannot take) hand back the same good runs and suspects."""
    data = eol.join(b",".join(fields) for fields in records) + (eol if records and final_eol else b"")
    brk = scan.line_break(eol)
    rows = screen.compile_rows(SCREENED_TYPES, ",", eol)
    assert rows is not None and rows.engine == "re2"
    outcomes = []
    saved = screen.WINDOW
    screen.WINDOW = window
    try:
        for engine in (rows, screen.Rows(rows.sre)):
            suspects: list[tuple[int, int]] = []
            good = b"".join(screen.split(engine, data, suspects, brk))
            outcomes.append((good, suspects))
    finally:
        screen.WINDOW = saved
    assert outcomes[0] == outcomes[1]
    good, suspects = outcomes[0]
    assert len(good) + sum(e - s for s, e in suspects) == len(data)  # every byte once, good or suspect


def test_a_value_past_re2s_repeat_limit_is_a_suspect_never_lost():
    rows = screen.compile_rows([("integer", True), ("character varying(100000)", False)], ",", eol=b"\n")
    assert rows is not None and rows.engine == "re2"
    long_ok = b"1," + b"x" * 5000 + b"\n"
    suspects: list[tuple[int, int]] = []
    good = b"".join(screen.split(rows, long_ok + b"2,y\n", suspects))
    assert (good, suspects) == (b"2,y\n", [(0, len(long_ok))])  # varchar(100000) is cut to 1000 bytes for RE2


def test_a_pattern_re2_cannot_take_is_screened_by_python_re(monkeypatch):
    monkeypatch.setattr(screen, "RE2_MAX_MEM", 1024)  # too little for any program
    screen._compiled.cache_clear()
    try:
        rows = screen.compile_rows([("integer", True), ("text", False)], ",", eol=b"\n")
        assert rows is not None and rows.engine == "re"
        suspects: list[tuple[int, int]] = []
        assert b"".join(screen.split(rows, b"1,a\nx,b\n2,c", suspects)) == b"1,a\n2,c"
        assert suspects == [(4, 8)]
    finally:
        screen._compiled.cache_clear()
