"""The reject file round-trips: every rejected record comes back as its original bytes under
the upload's header, and once fixed loads into the same table, so that (rows loaded) + (rows
of the fixed reject file) = every record of the file, each once."""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.config import Settings
from importd.errors import PermanentError, TransientError
from importd.imports import rejectfile, storage, store
from importd.imports.handlers import run_import_task
from tests.support.fence import Delivery, checkpoint_gate, lock_holders, waiting_on_gate
from tests.support.importing import context, run_import, write
from tests.support.infra import wait_for

NAMES = st.sampled_from(["plain", '"with, comma"', '"two\nlines"', '"quote "" inside"', '""', "",
                         '"crlf\r\ninside"', "Zoë Ångström", '"é; €"'])
RECORD = st.tuples(NAMES, st.booleans())  # (name field, bad age)


#: How spreadsheets save a file: (codec, with a UTF-8 byte order mark).
DIALECTS = [("utf-8", False), ("utf-8", True), ("cp1252", False)]


def build(records: list[tuple[str, bool]], eol: str, codec: str = "utf-8",
          bom: bool = False) -> tuple[bytes, list[bytes]]:
    """The file and the raw bytes of its bad records, in file order."""
    out, bad = [("\ufeff" if bom else "") + "id,name,age" + eol], []
    for i, (name, is_bad) in enumerate(records, 1):
        is_bad = is_bad or name == ""  # unquoted empty: NULL, refused by NOT NULL
        text = f"{i},{name},{'x' if is_bad else i % 50}{eol}"
        out.append(text)
        if is_bad:
            bad.append(text.encode(codec))
    return "".join(out).encode(codec), bad


def fix(data: bytes, eol: str, codec: str = "utf-8") -> bytes:
    """What a user does in a spreadsheet: a name where there was none, a number for the age;
    saved in the file's own encoding, byte order mark included."""
    bom = codec == "utf-8" and data.startswith(codecs.BOM_UTF8)
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig" if bom else codec), newline="")))
    out = io.StringIO()
    # Python's writer quotes only the line end's own characters: a bare-CR file needs its LFs quoted too
    writer = csv.writer(out, lineterminator=eol, quoting=csv.QUOTE_ALL if eol == "\r" else csv.QUOTE_MINIMAL)
    writer.writerow(rows[0])
    for row in rows[1:]:
        ident, name, age = row
        writer.writerow([ident, name or "fixed", age if age.isdigit() else "7"])
    return (codecs.BOM_UTF8 if bom else b"") + out.getvalue().encode(codec)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(records=st.lists(RECORD, min_size=1, max_size=40), eol=st.sampled_from(["\n", "\r\n", "\r"]),
       batch=st.sampled_from([64, 300, 8192]), mode=st.sampled_from(["atomic", "resumable"]),
       dialect=st.sampled_from(DIALECTS))
def test_rows_loaded_plus_the_fixed_reject_file_are_every_record_once(isettings, db, records, eol, batch, mode,
                                                                       dialect):
    """For every line end (bare CR too), a byte order mark and a non-UTF-8 encoding."""
    db.execute("TRUNCATE people")
    codec, bom = dialect
    data, bad = build(records, eol, codec, bom)
    path = write(isettings, data)
    options = {"batch_bytes": batch, "encoding": codec}
    rec, raised = run_import(isettings, path, mode=mode, max_errors=len(records), options=options)
    assert raised is None and rec.state == "SUCCESS", (raised, rec.error)
    rejects = reject_file(isettings, rec.id)
    header = (codecs.BOM_UTF8 if bom else b"") + f"id,name,age{eol}".encode()
    assert rejects == (header + b"".join(bad) if bad else b"")  # byte-exact, all of them
    with store.connect(isettings) as conn:
        info = rejectfile.summary(conn, rec.id)
    assert info is not None and info["records"] == len(bad) and info["file_bytes"] == len(rejects)
    if not bad:
        return
    assert sum(g["count"] for g in info["groups"]) == len(bad)

    again, raised = run_import(isettings, write(isettings, fix(rejects, eol, codec)), mode=mode,
                               options={"encoding": codec})
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


def people(count: int, bad_every: int) -> tuple[bytes, bytes, list[int]]:
    """A file of ``count`` people, every ``bad_every``-th with an age that is not a number: the
    file, its reject file (header and bad records) and the bad records' line numbers."""
    header, good, bad = b"id,name,age\n", [], []
    for i in range(1, count + 1):
        (bad if i % bad_every == 0 else good).append(b"%d,name %d,%s\n" % (i, i, b"x" if i % bad_every == 0 else b"7"))
    data = header + b"".join(sorted(good + bad, key=lambda r: int(r.split(b",")[0])))
    return data, header + b"".join(bad), [i + 1 for i in range(1, count + 1) if i % bad_every == 0]


def test_a_run_whose_final_write_is_refused_removes_its_reject_file_and_the_job_keeps_the_other_runs(
        isettings: Settings, db: Any, tmp_path: Path):
    """Each run publishes its own reject file, named in the transaction of the job's final
    state: a run that finds the job ended elsewhere rolls back and takes its file away; the
    file of the run that ended the job is untouched."""
    settings = dataclasses.replace(isettings, storage_url=f"file://{tmp_path}/store", import_streams=1)
    data, _, _ = people(300, 10)
    files = storage.from_settings(settings)
    obj = files.write("up.csv", io.BytesIO(data))
    job_id = uuid.uuid4().hex
    theirs = f"{storage.rejects_folder(job_id)}theirs.csv"
    ctx = context(settings, job_id, {"object": obj.as_args(), "table": "people", "mode": "resumable",
                                     "max_errors": 100, "options": {"batch_bytes": 512}})

    def progress(**fields: Any) -> None:  # after the last checkpoint: another delivery ends the job
        if fields["bytes"] == len(data):
            files.write(theirs, io.BytesIO(b"id,name,age\n1,theirs,x\n"))
            with store.connect(settings) as conn:
                store.update_job(conn, job_id, state="SUCCESS", finished_at=store.NOW)
                conn.execute("INSERT INTO importd.job_rejects (job_id, file_path, file_bytes, records)"
                             " VALUES (%s, %s, 23, 1)", (job_id, theirs))

    ctx.progress = progress  # type: ignore[method-assign]
    with pytest.raises(PermanentError, match="ended elsewhere"):
        run_import_task(ctx)
    assert files.keys(storage.rejects_folder(job_id)) == [theirs]
    with store.connect(settings) as conn:
        info = rejectfile.summary(conn, job_id)
    assert info is not None and (info["file_path"], info["records"]) == (theirs, 1)


GATE_KEY = 640_918


@pytest.fixture
def gate(isettings: Settings, db: Any) -> Iterator[Settings]:
    """The checkpoint gate of tests/support/fence.py on a table without a unique key: the second
    run's COPY must not wait for the first run's uncommitted rows (and a row loaded twice would
    show)."""
    db.execute("DROP TABLE IF EXISTS reject_fence")
    db.execute("CREATE TABLE reject_fence (id bigint NOT NULL, name text NOT NULL, age integer)")
    try:
        with checkpoint_gate(db, GATE_KEY, "test_rejects_gate"):
            yield dataclasses.replace(isettings, import_streams=2, tables="public.reject_fence")
    finally:
        db.execute("DROP TABLE IF EXISTS reject_fence")


def test_a_run_that_lost_its_lock_puts_nothing_into_the_reject_file_of_the_run_that_took_over(gate, db):
    """The run that lost its lock has taken a batch's rejected records when its checkpoint is
    refused; the run that took the job over resumes from the same checkpoint. Those records are
    the first run's alone (memory, its own spool): they are never committed, and the job's
    reject file holds every bad record once, in file order, from one run's file."""
    data, expected, lines = people(3000, 4)
    path = write(gate, data)
    job_id = uuid.uuid4().hex
    args = {"file": str(path), "table": "reject_fence", "mode": "resumable", "max_errors": 10_000,
            "options": {"batch_bytes": 4096}}
    db.execute("SELECT pg_advisory_lock(%s)", (GATE_KEY,))
    first = Delivery(gate, job_id, args, 1)
    first.start()
    wait_for(lambda: waiting_on_gate(db, GATE_KEY), 60, what="the first run's second stream at its checkpoint")
    (holder,) = lock_holders(db, GATE_KEY)
    db.execute("SELECT pg_terminate_backend(%s)", (holder,))
    wait_for(lambda: holder not in lock_holders(db, GATE_KEY), 30, what="the lock released")
    second = Delivery(gate, job_id, args, 2)
    second.start()
    wait_for(lambda: len(waiting_on_gate(db, GATE_KEY)) == 2, 60, what="the second run loading")
    db.execute("SELECT pg_advisory_unlock(%s)", (GATE_KEY,))
    first.join()
    second.join()
    assert isinstance(first.raised, TransientError), first.raised
    attempt = 3
    while True:
        with store.connect(gate) as conn:
            rec = store.get_job(conn, job_id)
        assert rec is not None
        if rec.finished:
            break
        assert attempt < 10, rec
        wait_for(lambda: not lock_holders(db, GATE_KEY), 30, what="no run holding the lock")
        Delivery(gate, job_id, args, attempt).run()
        attempt += 1
    assert (rec.state, rec.rows_imported, rec.rows_rejected) == ("SUCCESS", 3000 - len(lines), len(lines))
    assert db.execute("SELECT count(*), count(DISTINCT id) FROM reject_fence").fetchone() == (3000 - len(lines),) * 2
    assert reject_file(gate, job_id) == expected
    assert len(storage.from_settings(gate).keys(storage.rejects_folder(job_id))) == 1
    assert [r[0] for r in store.iter_rejected_rows(db, job_id)] == lines[:store.MAX_STORED_REJECTS]
    assert db.execute("SELECT count(*) FROM importd.reject_chunks WHERE job_id = %s", (job_id,)).fetchone() == (0,)
