"""Suspects judged by one cast query per batch (importd.imports.copy.triage): the same rejects as COPY,
without a failed COPY each, and the salvage for what a cast cannot judge."""

from __future__ import annotations

from typing import Any
from unittest import mock

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.imports.copy import salvage, screen, triage
from tests.integration.test_salvage import WIDE_DDL
from tests.support import oracle
from tests.support.importing import rejected, rows, run_import

HEADER = "id,n,amount,ratio,ok,day,at,code,uid,note\n"
GOOD = "1,12.50,1.5,true,2024-02-28,2024-01-01 10:00:00+00,abcd,123e4567-e89b-12d3-a456-426614174000,plain"  # after id
#: Bad rows (id, rest) and the report COPY gives for each: the first failing column in order.
BAD = {
    7: ("x,abc,1.5,maybe,2024-13-01,2024-01-01 10:00:00+00,abcd,,", "n", "x",
        'invalid input syntax for type smallint: "x"'),
    8: ('1,"99999999",1.5,true,2024-01-01,,,,', "amount", "99999999", "numeric field overflow"),
    9: ("1,1,1.5,true,2023-02-29,,,xyz,", "day", "2023-02-29", 'date/time field value out of range: "2023-02-29"'),
    10: ("1,1,1.5,true,,2024-06-31 00:00:00,,,", "at", "2024-06-31 00:00:00",
         'date/time field value out of range: "2024-06-31 00:00:00"'),
    11: ("1,1,1.5,true,,,,xyz,", "uid", "xyz", 'invalid input syntax for type uuid: "xyz"'),
}
#: Bad rows a cast cannot judge: a text column over its length, an empty NOT NULL field, ragged.
SALVAGED = {12: "1,1,1.5,true,,,abcde,,", 13: "1,1,1.5,,,,,,", 14: "1,1"}


def wide_file(copies: int = 20) -> bytes:
    lines = [HEADER]
    for block in range(copies):
        for i in range(1, 31):
            key = block * 100 + i
            rest = BAD[i][0] if i in BAD else SALVAGED.get(i, GOOD)
            lines.append(f"{key},{rest}\n")
    return "".join(lines).encode()


def test_typed_bad_fields_are_reported_as_copy_reports_them_without_a_failed_copy_each(isettings, db,
                                                                                       monkeypatch):
    failed = []
    attempt = salvage.RawCopy.attempt
    monkeypatch.setattr(salvage.RawCopy, "attempt",
                        lambda self, parts: (lambda r: failed.append(r[1] is not None) or r)(attempt(self, parts)))
    outcomes = []
    for compile_rows in (screen.compile_rows, lambda *args, **kwargs: None):
        db.execute("DROP TABLE IF EXISTS wide")
        db.execute(WIDE_DDL)
        failed.clear()
        with mock.patch.object(screen, "compile_rows", compile_rows):
            rec, raised = run_import(isettings, wide_file(), "wide", max_errors=1000, options={"batch_bytes": 4096})
        assert raised is None
        outcomes.append((rec.rows_imported, rec.rows_rejected, rows(db, "SELECT wide::text FROM wide ORDER BY id"),
                         rejected(isettings, rec.id)))
        failures = sum(failed)
    assert outcomes[0] == outcomes[1]
    reports = {line: (column, value, reason) for line, column, value, reason in outcomes[0][3]}
    for i, (_, column, value, reason) in BAD.items():
        assert reports[i + 1] == (column, value, reason)  # line = id + 1 (the header is line 1)
    assert outcomes[0][1] == 20 * (len(BAD) + len(SALVAGED))
    assert failures > 20 * len(BAD)  # without the screen every bad row costs a failed COPY ...
    failed.clear()
    db.execute("DROP TABLE IF EXISTS wide")
    db.execute(WIDE_DDL)
    run_import(isettings, wide_file(), "wide", max_errors=1000, options={"batch_bytes": 4096})
    assert sum(failed) <= 20 * len(SALVAGED) + 1  # ... with it, only those a cast cannot judge


def test_a_check_query_that_fails_leaves_the_suspects_to_the_salvage_with_the_same_outcome(isettings, db,
                                                                                          monkeypatch):
    outcomes = []
    for check in (triage.CHECK, "SELECT k FROM no_such_function(%s, %s)"):
        db.execute("DROP TABLE IF EXISTS wide")
        db.execute(WIDE_DDL)
        monkeypatch.setattr(triage, "CHECK", check)
        rec, raised = run_import(isettings, wide_file(3), "wide", max_errors=1000, options={"batch_bytes": 4096})
        assert raised is None and rec.state == "SUCCESS"
        outcomes.append((rec.rows_imported, rows(db, "SELECT wide::text FROM wide ORDER BY id"),
                         rejected(isettings, rec.id)))
    assert outcomes[0] == outcomes[1]


# -- property: PostgreSQL, record by record, is the oracle of a dirty file -----------------

MIXED_DDL = """CREATE TABLE wide (id bigint NOT NULL, name text NOT NULL, amount numeric(8,2), day date,
    at timestamptz, ok boolean, note text)"""
MIXED_HEADER = "id,name,amount,day,at,ok,note"
#: Values per column after id: (good ones, ones the screen leaves to PostgreSQL and bad ones).
MIXED_VALUES = [
    (["plain", '"with, comma"', '"two\nlines"', '"say ""hi"""', "x y"], ['""', ""]),
    (["12.50", "-3", ""], ['"7.5"', "N/A", "x", "1234567.1", "1e3", " 4"]),
    (["2024-02-28", ""], ["2024-02-29", "2023-02-29", "2024-13-01", "yesterday", '"2024-01-01"']),
    (["2024-01-01 10:00:00+00", ""], ["2024-06-31 00:00:00", "2024-01-01T10:00:00Z", "never"]),
    (["true", "f", ""], ["maybe", "YES", '"t"']),
    (["note", "", '"multi\nline, ""quoted"""'], ["tail\x01"]),
]
#: What happens to a record: kept whole, cut short by some fields, or given one field more.
SHAPES = st.sampled_from(["whole"] * 12 + [f"short{k}" for k in range(1, 7)] + ["extra", "extra"])
#: Mostly good values, as in a file worth loading (more than half bad turns the screen off).
MIXED_ROW = st.tuples(*(st.sampled_from(good * 40 + other) for good, other in MIXED_VALUES), SHAPES)


def mixed_file(records: list[tuple[str, ...]], eol: str) -> tuple[bytes, list[int]]:
    """The file and the (first) line number of each record."""
    lines, numbers, line = [MIXED_HEADER + eol], [], 2
    for i, (*values, shape) in enumerate(records, 1):
        fields = [str(i), *values]
        if shape.startswith("short"):
            fields = fields[:len(fields) - int(shape[5:])]
        elif shape == "extra":
            fields.append("more")
        text = ",".join(fields) + eol
        lines.append(text)
        numbers.append(line)
        line += text.count("\n")
    return "".join(lines).encode(), numbers


def copy_each(db: Any, records: list[bytes]) -> tuple[list[str], list[tuple[int, str | None, str]]]:
    """PostgreSQL's own answer, record by record (each alone in a COPY): the rows it loads as
    row text, and (index, column, message) of each record it refuses."""
    good, bad = [], []
    db.execute("DROP TABLE IF EXISTS wide")
    db.execute(MIXED_DDL)
    for index, record in enumerate(records):
        try:
            with db.transaction(), db.cursor() as cur:
                with cur.copy("COPY wide FROM STDIN (FORMAT csv)") as copy:
                    copy.write(record)
                good.extend(r[0] for r in cur.execute("SELECT wide::text FROM wide").fetchall())
                raise _Undo
        except _Undo:
            pass
        except psycopg.errors.DataError as exc:
            match = salvage.CONTEXT_LINE.search(exc.diag.context or "")
            bad.append((index, (match.group(2) if match else None) or exc.diag.column_name,
                        exc.diag.message_primary or ""))
        except psycopg.errors.IntegrityError as exc:
            bad.append((index, exc.diag.column_name, exc.diag.message_primary or ""))
    return sorted(good), bad


class _Undo(Exception):
    """Rolls back the oracle's one-record load after reading its rows."""


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(records=st.lists(MIXED_ROW, min_size=10, max_size=80), eol=st.sampled_from(["\n", "\r\n"]),
       batch=st.sampled_from([200, 700, 8192]), mode=st.sampled_from(["atomic", "resumable"]))
def test_a_dirty_file_loads_exactly_what_postgresql_accepts_record_by_record(isettings, db, records, eol, batch,
                                                                            mode):
    """Ragged records (short and long), bad numbers and dates, quotes and line breaks inside
    fields, in batches small enough that the screen, the triage's memory of values and of
    ragged records, and the salvage all run: the loaded rows are those PostgreSQL loads one
    record at a time, and every other record is reported at its line with COPY's reason."""
    data, lines = mixed_file(records, eol)
    good, bad = copy_each(db, oracle.records(data)[1:])
    db.execute("DROP TABLE IF EXISTS wide")
    db.execute(MIXED_DDL)
    rec, raised = run_import(isettings, data, "wide", mode=mode, max_errors=len(records),
                             options={"batch_bytes": batch})
    assert raised is None, raised
    assert (rec.state, rec.rows_imported, rec.rows_rejected) == ("SUCCESS", len(good), len(bad))
    assert sorted(r[0] for r in rows(db, "SELECT wide::text FROM wide")) == good
    reports = [(line, column, reason) for line, column, _value, reason in rejected(isettings, rec.id)]
    assert reports == [(lines[index], column, message) for index, column, message in bad]
