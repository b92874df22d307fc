"""The import engine on real files and a real table: every validation case of issue 3, point 3.

The ``import.csv`` handler runs in-process with a real JobContext against the test
database; each test asserts the exact rows loaded and the exact errors reported.
"""

from __future__ import annotations

import pytest

from importd.errors import PermanentError
from tests.support.importing import rejected, rows, run_import

HEADER = b"id,name,age,note\n"



def test_clean_utf8_file_with_bom_crlf_and_quoted_fields_loads_every_row_exactly(isettings, db):
    data = (b"\xef\xbb\xbfid,name,age,note\r\n"
            b'1,"Smith, Ann",30,"said ""hi"""\r\n'
            b'2,Bob,,""\r\n'
            b'3,"multi\r\nline",5,\r\n'
            b"4,J\xc3\xbcrgen,40,caf\xc3\xa9\r\n")
    rec, raised = run_import(isettings, data)
    assert raised is None
    assert (rec.state, rec.rows_imported, rec.rows_rejected, rec.error) == ("SUCCESS", 4, 0, None)
    assert rows(db) == [
        (1, "Smith, Ann", 30, 'said "hi"'),
        (2, "Bob", None, ""),  # unquoted empty -> NULL, quoted empty -> ''
        (3, "multi\r\nline", 5, None),
        (4, "Jürgen", 40, "café"),
    ]


def test_header_names_match_columns_ignoring_case_and_spaces_and_by_explicit_mapping(isettings, db):
    data = b" ID ,Full Name,AGE\n1,Ann,3\n"
    rec, _ = run_import(isettings, data, options={"columns": {"Full Name": "name"}})
    assert rec.state == "SUCCESS"
    assert rows(db) == [(1, "Ann", 3, None)]


def test_other_encoding_by_option_is_converted_by_postgresql(isettings, db):
    data = "id,name\n1,Zoë\n2,Ångström\n".encode("latin-1")
    rec, _ = run_import(isettings, data, options={"encoding": "latin1"})
    assert (rec.state, rec.rows_imported) == ("SUCCESS", 2)
    assert rows(db, "SELECT id, name FROM people ORDER BY id") == [(1, "Zoë"), (2, "Ångström")]


def test_invalid_utf8_is_reported_with_line_and_byte_offset(isettings, db):
    data = HEADER + b"1,ok,1,\n2,bad\xff,2,\n3,fine,3,\n"
    rec, raised = run_import(isettings, data, max_errors=5)
    assert rec.state == "SUCCESS" and raised is None
    offset = len(HEADER) + len(b"1,ok,1,\n") + len(b"2,bad")
    assert rejected(isettings, rec.id) == [
        (3, None, "2,bad\ufffd,2,", f'invalid byte sequence for encoding "UTF8": 0xff at byte offset {offset}')]
    assert rows(db, "SELECT id FROM people ORDER BY id") == [(1,), (3,)]


@pytest.mark.parametrize(("data", "options"), [
    (b"id;name;age\n1;Ann;3\n2;\"B;b\";4\n", {}),  # sniffed
    (b"id\tname\tage\n1\tAnn\t3\n2\tB;b\t4\n", {}),  # sniffed
    (b"id|name|age\n1|Ann|3\n2|B;b|4\n", {"delimiter": "|"}),  # by option
])
def test_delimiter_by_option_or_sniffed_from_the_header(isettings, db, data, options):
    rec, _ = run_import(isettings, data, options=options)
    assert rec.state == "SUCCESS"
    assert rows(db, "SELECT id, name, age FROM people ORDER BY id") == [(1, "Ann", 3), (2, "B;b", 4)]


def test_empty_file_fails_with_a_clear_reason(isettings, db):
    rec, raised = run_import(isettings, b"")
    assert isinstance(raised, PermanentError)
    assert (rec.state, rec.error) == ("FAILURE", "the file is empty: no header line")


def test_header_only_file_succeeds_with_zero_rows(isettings, db):
    rec, raised = run_import(isettings, b"\xef\xbb\xbfid,name\r\n")
    assert raised is None and (rec.state, rec.rows_imported, rec.rows_rejected) == ("SUCCESS", 0, 0)


def test_duplicate_and_unknown_header_columns_fail_before_any_row(isettings, db):
    rec, raised = run_import(isettings, b"id,name,Name,shoe_size\n1,a,b,9\n")
    assert isinstance(raised, PermanentError)
    assert rec.state == "FAILURE"
    assert rec.error == ("duplicate header columns: name; "
                         "unknown header columns for public.people: shoe_size")
    assert rows(db) == []


def test_not_null_column_without_default_missing_from_header_fails_before_any_row(isettings, db):
    rec, raised = run_import(isettings, b"id,age\n1,3\n")
    assert isinstance(raised, PermanentError)
    assert rec.error == "NOT NULL columns without default missing from the header: name"
    assert (rec.rows_imported, rec.rows_rejected) == (0, 0)


def test_ragged_rows_are_rejected_and_good_rows_load_within_max_errors(isettings, db):
    data = HEADER + b"1,a,1,x\n2,b\n3,c,3,x,extra\n4,d,4,x\n"
    rec, raised = run_import(isettings, data, max_errors=2)
    assert raised is None
    assert (rec.state, rec.rows_imported, rec.rows_rejected) == ("SUCCESS", 2, 2)
    assert rejected(isettings, rec.id) == [
        (3, None, "2,b", 'missing data for column "age"'),
        (4, None, "3,c,3,x,extra", "extra data after last expected column"),
    ]
    assert rows(db, "SELECT id FROM people ORDER BY id") == [(1,), (4,)]


def test_nul_byte_is_rejected_with_its_offset(isettings, db):
    data = HEADER + b"1,a\x00b,1,\n2,ok,2,\n"
    rec, _ = run_import(isettings, data, max_errors=1)
    assert rec.rows_imported == 1
    offset = len(HEADER) + 3
    assert rejected(isettings, rec.id) == [
        (2, None, "1,a\x00b,1,".replace("\x00", "\\x00"),
         f'invalid byte sequence for encoding "UTF8": 0x00 at byte offset {offset}')]


def test_field_and_line_over_the_configured_limits_are_rejected(isettings, db):
    long_field = b"x" * 40
    data = HEADER + b"1,a,1,short\n2,b,2," + long_field + b"\n3,c,3,ok\n4,\"" + b"y," * 30 + b"\",4,z\n"
    rec, _ = run_import(isettings, data, max_errors=5, options={"max_field_bytes": 32, "max_line_bytes": 60})
    reports = rejected(isettings, rec.id)
    assert [(r[0], r[1], r[3]) for r in reports] == [
        (3, "note", "field longer than 32 bytes (40 bytes)"),
        (5, None, "line longer than 60 bytes (68 bytes)"),
    ]
    assert reports[0][2] == "x" * 40
    assert rows(db, "SELECT id FROM people ORDER BY id") == [(1,), (3,)]


def test_a_quoted_field_over_the_limit_is_rejected_even_when_each_of_its_lines_is_shorter(isettings, db):
    field = b'"' + b"\n".join([b"y" * 20] * 3) + b'"'  # 62 bytes in three lines of 20
    data = HEADER + b"1,a,1,short\n2,b,2," + field + b"\n3,c,3," + b"z" * 30 + b"\n"
    rec, _ = run_import(isettings, data, max_errors=5, options={"max_field_bytes": 32})
    reports = rejected(isettings, rec.id)
    assert [(r[0], r[1], r[3]) for r in reports] == [(3, "note", "field longer than 32 bytes (62 bytes)")]
    assert rows(db, "SELECT id FROM people ORDER BY id") == [(1,), (3,)]


def test_type_and_constraint_errors_report_line_column_value_and_reason(isettings, db):
    data = (HEADER + b"1,a,1,\n2,\"two\nlines\",x,\n3,c,-1,\n4,,4,\n1,dup,5,\n5,e,5,\n")
    rec, _ = run_import(isettings, data, max_errors=10)
    assert rejected(isettings, rec.id) == [
        (3, "age", "x", 'invalid input syntax for type integer: "x"'),
        (5, None, "3,c,-1,", 'new row for relation "people" violates check constraint "people_age_check"'),
        (6, "name", None, 'null value in column "name" of relation "people" violates not-null constraint'),
        (7, None, "1,dup,5,", 'duplicate key value violates unique constraint "people_pkey"'),
    ]
    assert rows(db, "SELECT id FROM people ORDER BY id") == [(1,), (5,)]
    assert (rec.rows_imported, rec.rows_rejected) == (2, 4)


def test_more_bad_rows_than_max_errors_fails_atomically_with_the_report(isettings, db):
    data = HEADER + b"1,a,1,\n2,b,x,\n3,c,3,\n"
    rec, raised = run_import(isettings, data)  # max_errors 0: all or nothing
    assert isinstance(raised, PermanentError)
    assert rec.state == "FAILURE"
    assert rec.error == ('1 row(s) rejected (max_errors 0); first: line 3, column age: '
                         'invalid input syntax for type integer: "x"')
    assert (rec.rows_imported, rec.rows_rejected) == (0, 1)
    assert rows(db) == []
    assert len(rejected(isettings, rec.id)) == 1


def test_validate_only_loads_nothing_and_reports_counts_and_errors(isettings, db):
    data = HEADER + b"1,a,1,\n2,b,x,\n3,c,3,\n"
    rec, raised = run_import(isettings, data, validate_only=True, max_errors=1)
    assert raised is None
    assert (rec.state, rec.rows_imported, rec.rows_rejected) == ("SUCCESS", 2, 1)
    assert rejected(isettings, rec.id)[0][:2] == (3, "age")
    assert rows(db) == []


def test_a_line_reading_backslash_dot_is_data_not_the_end_of_copy(isettings, db):
    data = b"id,name\n1,a\n\\.\n2,b\n"
    rec, _ = run_import(isettings, data, max_errors=1)
    assert rows(db, "SELECT id, name FROM people ORDER BY id") == [(1, "a"), (2, "b")]
    assert rejected(isettings, rec.id) == [(3, "id", "\\.", 'invalid input syntax for type bigint: "\\."')]


def test_unclosed_quote_that_runs_past_the_line_limit_fails_the_job(isettings, db):
    data = HEADER + b'1,"never closed,1,\n' + b"2,b,2,\n" * 50
    rec, raised = run_import(isettings, data, options={"max_line_bytes": 64, "batch_bytes": 64})
    assert isinstance(raised, PermanentError)
    assert rec.error is not None and "a quoted field is not closed within 64 bytes" in rec.error
    assert rows(db) == []


def test_bare_cr_line_ends_load_as_psql_loads_them_and_other_line_ends_are_bad_rows(isettings, db):
    """issue 12 item 11: the line end is the header's (bare CR here) for the whole file, in
    every batch; a record holding an LF outside quotes is a bad row, as psql fails there."""
    data = b'id,name\r1,a\r2,"b\rc"\rx,d\r3,e\n4,f\r5,g\r'
    rec, raised = run_import(isettings, data, max_errors=2, options={"batch_bytes": 8})
    assert raised is None, raised
    assert rows(db, "SELECT id, name FROM people ORDER BY id") == [(1, "a"), (2, "b\rc"), (5, "g")]
    assert [r[:3] for r in rejected(isettings, rec.id)] == [(5, "id", "x"), (6, None, "3,e\n4,f")]
    assert rejected(isettings, rec.id)[1][3] == "unquoted newline found in data"


@pytest.mark.parametrize("mode", ["atomic", "resumable"])
def test_all_bad_rows_are_counted_and_the_first_thousand_stored(isettings, db, mode):
    data = HEADER + b"".join(b"%d,n,%s,\n" % (i, b"x" if i % 2 else b"1") for i in range(1, 3001))
    rec, raised = run_import(isettings, data, mode=mode, max_errors=1500, options={"batch_bytes": 4096})
    assert raised is None
    assert (rec.state, rec.rows_imported, rec.rows_rejected) == ("SUCCESS", 1500, 1500)
    stored = rejected(isettings, rec.id)
    assert len(stored) == 1000
    assert [r[0] for r in stored] == [i + 1 for i in range(1, 2000, 2)]  # file lines of the first 1,000
