"""The reject file round-trips: every rejected record comes back as its original bytes under
the upload's header, and once fixed loads into the same table, so that (rows loaded) + (rows
of the fixed reject file) = every record of the file, each once."""

from __future__ import annotations

import csv
import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.config import Settings
from importd.imports import rejectfile, storage, store
from tests.support.importing import run_import, write

NAMES = st.sampled_from(["plain", '"with, comma"', '"two\nlines"', '"quote "" inside"', '""', "",
                         '"crlf\r\ninside"'])
RECORD = st.tuples(NAMES, st.booleans())  # (name field, bad age)


def build(records: list[tuple[str, bool]], eol: str) -> tuple[bytes, list[bytes]]:
    """The file and the raw bytes of its bad records, in file order."""
    out, bad = ["id,name,age" + eol], []
    for i, (name, is_bad) in enumerate(records, 1):
        is_bad = is_bad or name == ""  # unquoted empty: NULL, refused by NOT NULL
        text = f"{i},{name},{'x' if is_bad else i % 50}{eol}"
        out.append(text)
        if is_bad:
            bad.append(text.encode())
    return "".join(out).encode(), bad


def fix(data: bytes, eol: str) -> bytes:
    """What a user does in a spreadsheet: a name where there was none, a number for the age."""
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=eol)
    writer.writerow(rows[0])
    for row in rows[1:]:
        ident, name, age = row
        writer.writerow([ident, name or "fixed", age if age.isdigit() else "7"])
    return out.getvalue().encode()


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(records=st.lists(RECORD, min_size=1, max_size=40), eol=st.sampled_from(["\n", "\r\n"]),
       batch=st.sampled_from([64, 300, 8192]), mode=st.sampled_from(["atomic", "resumable"]))
def test_rows_loaded_plus_the_fixed_reject_file_are_every_record_once(isettings, db, records, eol, batch, mode):
    db.execute("TRUNCATE people")
    data, bad = build(records, eol)
    path = write(isettings, data)
    rec, raised = run_import(isettings, path, mode=mode, max_errors=len(records), options={"batch_bytes": batch})
    assert raised is None and rec.state == "SUCCESS", (raised, rec.error)
    rejects = reject_file(isettings, rec.id)
    assert rejects == (f"id,name,age{eol}".encode() + b"".join(bad) if bad else b"")  # byte-exact, all of them
    with store.connect(isettings) as conn:
        info = rejectfile.summary(conn, rec.id)
    assert info is not None and info["records"] == len(bad) and info["file_bytes"] == len(rejects)
    if not bad:
        return
    assert sum(g["count"] for g in info["groups"]) == len(bad)

    again, raised = run_import(isettings, write(isettings, fix(rejects, eol)), mode=mode)
    assert raised is None and again.state == "SUCCESS", (raised, again.error)
    assert rec.rows_imported + again.rows_imported == len(records)
    ids = [r[0] for r in db.execute("SELECT id FROM people ORDER BY id").fetchall()]
    assert ids == list(range(1, len(records) + 1))


def reject_file(settings: Settings, job_id: str) -> bytes:
    """The job's published reject file, read from the upload store (b"" if it has none)."""
    with store.connect(settings) as conn:
        info = rejectfile.summary(conn, job_id)
    if info is None or not info["file_path"]:
        return b""
    with storage.from_settings(settings).open(info["file_path"]) as f:
        return f.read()


def test_errors_are_grouped_by_column_and_reason_with_counts_and_example_lines(isettings, db):
    body = "".join(f"{i},n{i},{'x' if i % 3 == 0 else ('' if i % 5 == 0 else i)}\n" for i in range(1, 31))
    rec, _ = run_import(isettings, b"id,name,age\n" + body.encode() + b"31,,4\n", max_errors=100, validate_only=True)
    with store.connect(isettings) as conn:
        info = rejectfile.summary(conn, rec.id)
    assert info is not None
    groups = {(g["column"], g["reason"]): (g["count"], g["lines"]) for g in info["groups"]}
    assert groups[("age", "invalid input syntax for type integer")] == (10, [4, 7, 10])
    assert [k for k in groups if k[0] == "name"] and sum(c for c, _ in groups.values()) == rec.rows_rejected == 11
