"""Parallel COPY streams of a resumable import (:mod:`importd.imports.copy.streams`): batches load at once on
two connections and settle in file order, so the outcome is one stream's, row for row."""

from __future__ import annotations

import dataclasses
import threading
import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.config import Settings
from importd.errors import TransientError
from importd.imports import run, store
from importd.imports.handlers import lock_key, run_import_task
from tests.support.importing import context, rejected, rows, run_import, write
from tests.support.infra import wait_for

HEADER = b"id,name,age,note\n"
BATCHES = {"batch_bytes": 2048}


def quoted_rows(n: int, start: int = 1) -> bytes:
    return b"".join(b'%d,name %d,%d.%02d,"note, with ""quotes""\nand a newline"\n' % (i, i, i, i % 100)
                    for i in range(start, start + n))


def people(n: int, bad: dict[int, bytes] | None = None) -> bytes:
    """``n`` rows of people; ``bad`` replaces some rows by id."""
    bad = bad or {}
    return HEADER + b"".join(bad.get(i, b"%d,name %d,%d,\n" % (i, i, i % 90)) for i in range(1, n + 1))


def serial(settings: Settings) -> Settings:
    return dataclasses.replace(settings, import_streams=1)


def outcome(settings: Settings, db, rec: store.JobRecord) -> tuple[object, ...]:
    return (rec.state, rec.rows_imported, rec.rows_rejected, rec.checkpoint_rows, rec.error,
            rejected(settings, rec.id), rows(db))


class CopyBackends(threading.Thread):
    """Collects the pids of the backends seen running a COPY into ``table`` (read from
    pg_stat_activity), until stopped: how many streams really loaded, as the server saw it."""

    def __init__(self, settings: Settings, table: str) -> None:
        super().__init__(daemon=True)
        self.settings, self.table = settings, table
        self.pids: set[int] = set()
        self.running = True

    def run(self) -> None:
        with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
            while self.running:
                found = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state = 'active'"
                    " AND pid <> pg_backend_pid() AND query ILIKE %s", (f"COPY%{self.table}%",)).fetchall()
                self.pids.update(pid for (pid,) in found)

    def __enter__(self) -> CopyBackends:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.running = False
        self.join()


def test_parallel_streams_load_every_row_once_and_count_them(isettings, db):
    n = 200_000
    with CopyBackends(isettings, "big") as copying:
        rec, raised = run_import(isettings, HEADER.replace(b"age", b"amount") + quoted_rows(n), "big",
                                 mode="resumable", options={"batch_bytes": 32 * 1024})
    assert raised is None
    assert (rec.state, rec.rows_imported, rec.checkpoint_rows) == ("SUCCESS", n, n)
    assert db.execute("SELECT count(*), count(DISTINCT id), min(id), max(id) FROM big").fetchone() == (n, n, 1, n)
    assert len(copying.pids) >= 2, copying.pids  # the server saw COPY on more than one connection


@pytest.mark.parametrize("max_errors", [100, 3])
def test_parallel_outcome_equals_one_stream_with_bad_rows_in_many_batches(isettings, db, max_errors):
    """Settling in file order keeps the counts, the first error, the stored rejected rows and,
    past max_errors, the committed prefix exactly as one stream leaves them."""
    bad = {i: b"%d,name,-1,\n" % i for i in (7, 150, 151, 420, 777, 1200, 1999)}
    bad[500] = b"500,,5,\n"  # NOT NULL
    bad[900] = b"900,name,x,\n"
    data = people(2000, bad)
    results = []
    for s in (serial(isettings), isettings):
        db.execute("TRUNCATE people")
        rec, _ = run_import(s, data, mode="resumable", max_errors=max_errors, options=BATCHES)
        results.append(outcome(s, db, rec))
    assert results[0] == results[1]
    state, imported, rejected_count = results[1][:3]
    if max_errors == 100:
        assert (state, imported, rejected_count) == ("SUCCESS", 2000 - len(bad), len(bad))
    else:
        assert state == "FAILURE" and 0 < imported < 500


def test_a_later_batch_holding_a_key_an_earlier_batch_waits_for_rolls_back_and_loads_after_it(
        isettings, db, capsys):
    """Protection proved: the waiting stream notices that it blocks an earlier batch (a key in
    both) and rolls back. Without it the two would wait for each other (one of them in Python,
    where PostgreSQL cannot see it) until lock_timeout, and the job would fail its attempt."""
    db.execute("CREATE FUNCTION importd_test_slow() RETURNS trigger LANGUAGE plpgsql AS "
               "$$ BEGIN PERFORM pg_sleep(1); RETURN NEW; END $$")
    try:
        db.execute("CREATE TRIGGER slow BEFORE INSERT ON people FOR EACH ROW WHEN (NEW.id = 20) "
                   "EXECUTE FUNCTION importd_test_slow()")
        first = HEADER + b"".join(b"%d,name %d,1,\n" % (i, i) for i in range(1, 21)) + b"99,early,1,\n"
        second = b"99,late,2,\n" + b"".join(b"%d,name %d,1,\n" % (i, i) for i in range(100, 120))
        rec, raised = run_import(isettings, first + second, mode="resumable", max_errors=1,
                                 options={"batch_bytes": len(first) - len(HEADER)})
    finally:
        db.execute("DROP TABLE people")
        db.execute("DROP FUNCTION importd_test_slow()")
    assert raised is None
    assert (rec.state, rec.rows_imported, rec.rows_rejected) == ("SUCCESS", 41, 1)
    (line, _column, _value, reason), = rejected(isettings, rec.id)
    assert line == 23 and "duplicate key" in reason  # the second 99, as one stream would report it
    assert "batch rolled back to let an earlier one pass its lock" in capsys.readouterr().out


def test_a_stream_whose_connection_dies_fails_the_attempt_and_the_next_one_resumes_exactly_once(isettings, db):
    """Protection proved: a failed stream stops the others before the turn passes its batch,
    so the committed part stays one prefix and the checkpoint stays true."""
    n = 30_000
    path = write(isettings, people(n))
    job_id = uuid.uuid4().hex
    args = {"file": str(path), "table": "people", "mode": "resumable", "options": {"batch_bytes": 4096}}

    def kill_the_second_stream() -> None:
        with store.connect(isettings) as conn:
            wait_for(lambda: (store.get_job(conn, job_id) or store.JobRecord(id="")).checkpoint_rows > 0, 20, 0.01)
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'importd-worker'"
                " AND datname = current_database() AND pid NOT IN (SELECT pid FROM pg_locks WHERE locktype ="
                " 'advisory' AND objid::bigint = (hashtextextended(%s, 0) & 4294967295))", (lock_key(job_id),))

    killer = threading.Thread(target=kill_the_second_stream)
    killer.start()
    with pytest.raises(TransientError):
        run_import_task(context(isettings, job_id, args, attempt=1))
    killer.join()
    with store.connect(isettings) as conn:
        first = store.get_job(conn, job_id)
    assert first is not None and 0 < first.checkpoint_rows < n
    assert db.execute("SELECT count(*), max(id) FROM people").fetchone() == (first.checkpoint_rows,
                                                                              first.checkpoint_rows)
    run_import_task(context(isettings, job_id, args, attempt=2))
    with store.connect(isettings) as conn:
        final = store.get_job(conn, job_id)
    assert final is not None and (final.state, final.rows_imported) == ("SUCCESS", n)
    assert db.execute("SELECT count(*), count(DISTINCT id), min(id), max(id) FROM people").fetchone() == (n, n, 1, n)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(bad=st.sets(st.integers(1, 600), max_size=25), max_errors=st.sampled_from([0, 5, 1000]),
       batch=st.sampled_from([256, 1024, 4096]), kind=st.sampled_from([b"%d,name,-1,\n", b"%d,name,x,\n",
                                                                       b"%d,,1,\n", b"%d,ragged\n"]))
def test_two_streams_give_one_streams_outcome_whatever_the_bad_rows(isettings, db, bad, max_errors, batch, kind):
    """Protection proved: batches settle in file order. Committing them as they finish would
    change which rows a failed job keeps, its counts and its first error."""
    data = people(600, {i: kind % i for i in bad})
    results = []
    for s in (serial(isettings), isettings):
        db.execute("TRUNCATE people")
        rec, _ = run_import(s, data, mode="resumable", max_errors=max_errors, options={"batch_bytes": batch})
        results.append(outcome(s, db, rec))
    assert results[0] == results[1]


def test_a_refused_extra_connection_leaves_the_import_to_one_stream(isettings, db, monkeypatch):
    """max_connections reached: the job does not fail its attempt for want of a second stream.
    The refusal is counted where it happens (the extra connection was asked for and refused),
    and the server saw the COPY on one connection only."""
    refused: list[str] = []

    def refuse(settings):
        refused.append("refused")
        raise psycopg.OperationalError("FATAL:  sorry, too many clients already")

    monkeypatch.setattr(run, "connect", refuse)
    with CopyBackends(isettings, "people") as copying:
        rec, raised = run_import(isettings, people(30_000), mode="resumable", options=BATCHES)
    assert raised is None and (rec.state, rec.rows_imported) == ("SUCCESS", 30_000)
    assert db.execute("SELECT count(*), count(DISTINCT id) FROM people").fetchone() == (30_000, 30_000)
    assert refused  # a second stream was asked for, and the refusal did not end the attempt
    assert len(copying.pids) == 1, copying.pids  # one stream loaded every batch
