"""Columns to ignore: a field the job's ``columns`` option maps to null is read and dropped.

The file's bytes go to COPY unchanged (checkpoints, line numbers, the reject file and the
salvage's byte ranges rely on them), through the staging table; so an import with ignored
fields must be the import of the same file with those fields cut out: the same rows, the same
rejected lines for the same reasons, and a reject file holding the original records."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.imports import store
from tests.integration.test_rejectfile import reject_file
from tests.support.importing import rejected, rows, run_import, write

CONFLICTS = [{"on_conflict": "error"}, {"on_conflict": "skip"},
             {"on_conflict": "update", "conflict_key": ["id"]}]


def csv_line(fields: list[str], eol: str = "\n") -> bytes:
    return (",".join(fields) + eol).encode()


def comparable(settings, job_id: str, lines: list[bytes]) -> list[tuple[object, ...]]:
    """The job's rejected rows as the ignoring does not change them: (record number, column,
    value, reason) for the file of ``lines`` (header first), the value only when it is one
    field's (a record-level failure shows the whole record, which holds the ignored fields).
    Record numbers, not line numbers: an ignored field may hold line breaks."""
    record_of, line = {}, 1
    for number, raw in enumerate(lines):
        record_of[line] = number
        line += raw.count(b"\n")
    return [(record_of[line], column, value if column else None, reason)
            for line, column, value, reason in rejected(settings, job_id)]


def line_of(lines: list[bytes], record: bytes) -> int:
    """The line number ``record`` starts on in the file of ``lines``."""
    return 1 + sum(raw.count(b"\n") for raw in lines[:lines.index(record)])


def both(isettings, db, full: bytes, cut: bytes, ignore: dict[str, None], mode: str,
         options: dict[str, object], max_errors: int) -> tuple[store.JobRecord, store.JobRecord, list, list]:
    """Import ``full`` ignoring ``ignore``, then ``cut`` (the same file without those fields)
    into an empty table: both job rows and both tables."""
    db.execute("TRUNCATE people")
    ignored, raised = run_import(isettings, full, mode=mode, max_errors=max_errors,
                                 options={**options, "columns": ignore})
    assert raised is None and ignored.state == "SUCCESS", (raised, ignored.error)
    loaded_ignoring = rows(db)
    db.execute("TRUNCATE people")
    plain, raised = run_import(isettings, cut, mode=mode, max_errors=max_errors, options=options)
    assert raised is None and plain.state == "SUCCESS", (raised, plain.error)
    return ignored, plain, loaded_ignoring, rows(db)


@pytest.mark.parametrize("conflict", CONFLICTS, ids=lambda c: c["on_conflict"])
@pytest.mark.parametrize("mode", ["atomic", "resumable"])
def test_an_extra_column_and_a_trailing_empty_one_ignored_load_as_the_file_without_them(isettings, db, mode,
                                                                                          conflict):
    """Excel's trailing delimiter (an empty last header name) and a Notes column the table
    lacks, both mapped to null: rows, rejects (line, column, reason) and the reject file's
    bytes are those of the file without the two columns, the reject file keeping them."""
    full_lines, cut_lines, bad = [b"id,name,Notes,age,note,\r\n"], [b"id,name,age,note\r\n"], []
    for i in range(1, 121):
        age = "x" if i % 17 == 0 else ("-1" if i % 23 == 0 else str(i % 60))
        name = "" if i % 29 == 0 else f"name {i}"
        notes = '"a, ""quoted"" note\r\nover two lines"' if i % 7 == 0 else ("x" if i % 5 == 0 else "")
        ident = str(i - 1) if i % 41 == 0 else str(i)  # a key twice: refused, skipped or updated
        full = csv_line([ident, name, notes, age, f"n{i}", ""], "\r\n")
        full_lines.append(full)
        cut_lines.append(csv_line([ident, name, age, f"n{i}"], "\r\n"))
        if age in ("x", "-1") or not name or (i % 41 == 0 and conflict["on_conflict"] == "error"):
            bad.append(full)
    options = {**conflict, "batch_bytes": 512}
    ignored, plain, got, expected = both(isettings, db, b"".join(full_lines), b"".join(cut_lines),
                                         {"Notes": None, "": None}, mode, options, max_errors=100)
    assert got == expected and len(got) > 90
    assert (ignored.rows_imported, ignored.rows_rejected) == (plain.rows_imported, plain.rows_rejected)
    assert comparable(isettings, ignored.id, full_lines) == comparable(isettings, plain.id, cut_lines)
    assert [r[0] for r in rejected(isettings, ignored.id)] == [line_of(full_lines, b) for b in bad]
    assert reject_file(isettings, ignored.id) == full_lines[0] + b"".join(bad)  # the original bytes


def test_a_field_no_column_takes_and_nothing_ignores_is_refused_naming_it(isettings, db):
    """Ignoring is explicit: an empty header name or an extra column is refused as before
    unless the mapping sends it to null."""
    rec, raised = run_import(isettings, b"id,name,Notes,\n1,a,b,\n", options={"columns": {"Notes": None}})
    assert raised is not None and rec.state == "FAILURE"
    assert "unknown header columns for public.people: (empty name, column 4)" in (rec.error or "")
    assert "Notes" not in (rec.error or "")


def test_an_ignored_field_may_be_a_table_column_and_is_then_not_loaded(isettings, db):
    """Null ignores any header field, one matching a column too (the column keeps its default)."""
    rec, raised = run_import(isettings, b"id,name,age,note\n1,a,5,kept out\n",
                             options={"columns": {"note": None, "AGE": None}})
    assert raised is None and rec.state == "SUCCESS", rec.error
    assert rows(db) == [(1, "a", None, None)]


FIELD = st.sampled_from(["", "x", "1", '"a,b"', '"two\nlines"', '"q "" q"', "  ", "é"])
ROW = st.tuples(st.sampled_from(["ok", "ok", "ok", "age", "name", "check"]), st.lists(FIELD, min_size=3, max_size=3))


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(records=st.lists(ROW, min_size=1, max_size=60), extra=st.integers(1, 3), seed=st.integers(0, 2**16),
       mode=st.sampled_from(["atomic", "resumable"]), conflict=st.sampled_from(CONFLICTS),
       batch=st.sampled_from([96, 400, 8192]))
def test_importing_with_ignored_fields_equals_importing_the_file_with_them_cut_out(isettings, db, records, extra,
                                                                                   seed, mode, conflict, batch):
    """Random files, random ignored positions (an empty name among them) and some bad rows:
    the same table, the same rejected lines and reasons, a reject file of the original records."""
    rnd = random.Random(seed)
    names = ["id", "name", "age", "note"]
    ignored_names = [f"extra {k}" if k else "" for k in range(extra)]
    layout = names[:]
    for name in ignored_names:
        layout.insert(rnd.randrange(len(layout) + 1), name)
    full_lines, cut_lines, bad, bad_lines, number = [csv_line(layout)], [csv_line(names)], [], [], 2
    for i, (kind, extras) in enumerate(records, 1):
        values = {"id": str(i), "name": "" if kind == "name" else f"n{i}",
                  "age": "x" if kind == "age" else ("-3" if kind == "check" else str(i)), "note": extras[0]}
        fills = iter(extras[1:] + extras)
        line = csv_line([values[f] if f in values else next(fills) for f in layout])
        full_lines.append(line)
        cut_lines.append(csv_line([values[f] for f in names]))
        if kind != "ok":
            bad.append(line)
            bad_lines.append(number)
        number += line.count(b"\n")
    options = {**conflict, "batch_bytes": batch}
    ignored, plain, got, expected = both(isettings, db, b"".join(full_lines), b"".join(cut_lines),
                                         dict.fromkeys(ignored_names), mode, options, max_errors=len(records))
    assert got == expected
    assert comparable(isettings, ignored.id, full_lines) == comparable(isettings, plain.id, cut_lines)
    assert [r[0] for r in rejected(isettings, ignored.id)] == bad_lines
    assert reject_file(isettings, ignored.id) == (full_lines[0] + b"".join(bad) if bad else b"")


def test_the_staging_table_of_an_earlier_load_on_the_connection_is_replaced(isettings, db):
    """The worker keeps its connection from job to job: a load with other ignored fields (or
    none) on it gets a staging table of its own shape."""
    first, raised = run_import(isettings, write(isettings, b"id,x,name\n1,a,b\n"),
                               options={"on_conflict": "skip", "columns": {"x": None}})
    assert raised is None and first.state == "SUCCESS", first.error
    second, raised = run_import(isettings, b"id,name,y,z\n2,c,d,e\n",
                                options={"on_conflict": "skip", "columns": {"y": None, "z": None}})
    assert raised is None and second.state == "SUCCESS", second.error
    assert rows(db) == [(1, "b", None, None), (2, "c", None, None)]


def test_replacing_the_staging_table_never_drops_a_table_of_that_name_in_a_schema(isettings, db):
    db.execute("DROP TABLE IF EXISTS public.importd_stage")
    db.execute("CREATE TABLE public.importd_stage (kept int)")
    try:
        for _ in range(2):
            rec, raised = run_import(isettings, b"id,name,x\n1,a,b\n",
                                     options={"on_conflict": "skip", "columns": {"x": None}})
            assert raised is None and rec.state == "SUCCESS", rec.error
        assert db.execute("SELECT to_regclass('public.importd_stage') IS NOT NULL").fetchone() == (True,)
    finally:
        db.execute("DROP TABLE IF EXISTS public.importd_stage")
