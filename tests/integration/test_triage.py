"""Suspects judged by one cast query per batch (importd.imports.copy.triage): the same rejects as COPY,
without a failed COPY each, and the salvage for what a cast cannot judge."""

from __future__ import annotations

from unittest import mock

from importd.imports.copy import salvage, screen, triage
from tests.integration.test_salvage import WIDE_DDL
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
