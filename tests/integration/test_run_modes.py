"""Import modes and job outcomes: atomic vs resumable, resume from a checkpoint, conflicts,
exactly-once guards (advisory lock, finished jobs), permanent and transient failures."""

from __future__ import annotations

import dataclasses
import os
import threading
import uuid
from typing import Any

import psycopg
import pytest

from importd.errors import Deferred, InvalidMessage, PermanentError, SoftTimeLimitExceeded, TransientError
from importd.imports import run, store
from importd.imports.handlers import lock_key, on_import_give_up, on_import_retry, run_import_task
from importd.imports.progress import Progress
from tests.support.importing import context, rejected, rows, run_import, write
from tests.support.infra import wait_for

HEADER = b"id,name,age,note\n"
SMALL_BATCHES = {"batch_bytes": 64}



def numbered(n: int, start: int = 1) -> bytes:
    return b"".join(b"%d,name %d,%d,\n" % (i, i, i % 90) for i in range(start, start + n))


def test_atomic_mode_loads_nothing_when_a_late_batch_has_too_many_errors(isettings, db):
    data = HEADER + numbered(20) + b"21,bad,x,\n" + numbered(5, 22)
    rec, raised = run_import(isettings, data, options=SMALL_BATCHES)
    assert isinstance(raised, PermanentError)
    assert (rec.state, rec.rows_imported, rec.rows_rejected) == ("FAILURE", 0, 1)
    assert rows(db) == []


def test_resumable_mode_keeps_the_batches_committed_before_the_failure(isettings, db):
    data = HEADER + numbered(20) + b"21,bad,x,\n" + numbered(5, 22)
    rec, raised = run_import(isettings, data, mode="resumable", options=SMALL_BATCHES)
    assert isinstance(raised, PermanentError)
    assert rec.state == "FAILURE" and rec.rows_rejected == 1
    loaded = [r[0] for r in rows(db)]
    assert loaded == list(range(1, len(loaded) + 1)) and 0 < len(loaded) <= 20
    assert rec.rows_imported == rec.checkpoint_rows == len(loaded)
    assert rejected(isettings, rec.id)[0][:2] == (22, "age")
    assert rec.error == ('1 row(s) rejected (max_errors 0); first: line 22, column age: '
                         'invalid input syntax for type integer: "x"')


def test_resumable_import_stopped_mid_way_resumes_from_its_checkpoint_without_duplicates(isettings, db):
    n = 6000
    path = write(isettings, HEADER + numbered(n))
    job_id = uuid.uuid4().hex
    args = {"file": str(path), "table": "people", "mode": "resumable", "options": {"batch_bytes": 256}}
    ctx = context(isettings, job_id, args, attempt=1)

    def stop_after_first_checkpoint() -> None:
        with store.connect(isettings) as conn:
            wait_for(lambda: (store.get_job(conn, job_id) or store.JobRecord(id="")).checkpoint_rows > 0, 20)
        ctx.request_stop("test stop")

    stopper = threading.Thread(target=stop_after_first_checkpoint)
    stopper.start()
    with pytest.raises(SoftTimeLimitExceeded):
        run_import_task(ctx)
    stopper.join()
    on_import_retry(ctx, SoftTimeLimitExceeded("test stop"))
    with store.connect(isettings) as conn:
        first = store.get_job(conn, job_id)
    assert first is not None and first.state == "RETRY" and 0 < first.checkpoint_rows < n
    assert db.execute("SELECT count(*) FROM people").fetchone() == (first.checkpoint_rows,)

    run_import_task(context(isettings, job_id, args, attempt=2))
    with store.connect(isettings) as conn:
        final = store.get_job(conn, job_id)
    assert final is not None
    assert (final.state, final.rows_imported, final.rows_rejected, final.attempts) == ("SUCCESS", n, 0, 2)
    assert db.execute("SELECT count(*), count(DISTINCT id), min(id), max(id) FROM people").fetchone() == (n, n, 1, n)


def test_on_conflict_skip_keeps_existing_rows_and_update_upserts_on_the_key(isettings, db):
    db.execute("INSERT INTO items VALUES ('a', 1, 'old a'), ('b', 2, 'old b')")
    data = b"sku,qty,label\na,10,new a\nc,30,new c\n"
    rec, _ = run_import(isettings, data, "items", options={"on_conflict": "skip"})
    assert (rec.state, rec.rows_imported) == ("SUCCESS", 1)
    assert rows(db, "SELECT * FROM items ORDER BY sku") == [("a", 1, "old a"), ("b", 2, "old b"), ("c", 30, "new c")]
    data = b"sku,qty,label\nb,20,new b\nd,40,\nd,41,again\nx,,no qty\n"
    rec, _ = run_import(isettings, data, "items", max_errors=1,
                        options={"on_conflict": "update", "conflict_key": ["sku"]})
    assert (rec.state, rec.rows_imported, rec.rows_rejected) == ("SUCCESS", 3, 1)
    assert rows(db, "SELECT * FROM items ORDER BY sku") == [
        ("a", 1, "old a"), ("b", 20, "new b"), ("c", 30, "new c"), ("d", 41, "again")]
    assert rejected(isettings, rec.id) == [
        (5, "qty", None, 'null value in column "qty" of relation "items" violates not-null constraint')]


def test_a_finished_job_is_a_no_op_when_delivered_again(isettings, db):
    rec, _ = run_import(isettings, HEADER + numbered(3))
    assert rec.state == "SUCCESS"
    again, raised = run_import(isettings, HEADER + numbered(3), job_id=rec.id, attempt=2)
    assert raised is None
    assert (again.state, again.attempts, again.rows_imported) == ("SUCCESS", 1, 3)
    assert db.execute("SELECT count(*) FROM people").fetchone() == (3,)


def test_a_second_delivery_of_a_running_job_is_deferred_by_the_advisory_lock(isettings, db):
    job_id = uuid.uuid4().hex
    path = write(isettings, HEADER + numbered(2))
    with store.connect(isettings) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"importd.job:{job_id}",))
        with pytest.raises(Deferred) as info:
            run_import_task(context(isettings, job_id, {"file": str(path), "table": "people"}))
        assert info.value.reason == "locked"
        # Unlock explicitly: a closed session's locks go only when its backend has exited.
        holder.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (f"importd.job:{job_id}",))
    rec, _ = run_import(isettings, path, job_id=job_id)
    assert rec.state == "SUCCESS" and rec.rows_imported == 2


@pytest.mark.parametrize(("table", "file", "reason"), [
    ("people", "missing.csv", "file not found: {path}"),
    ("people", "/etc/passwd", "file path '/etc/passwd' is outside the upload directory"),
    ("people", "link.csv", "file path '{path}' is outside the upload directory"),
    ("pg_authid", "ok.csv", "table 'pg_authid' is not on the allowlist (IMPORTD_TABLES)"),
    ("public.wide", "ok.csv", "table public.wide does not exist"),
])
def test_permanent_problems_record_failure_with_the_reason(isettings, db, tmp_path, table, file, reason):
    outside = tmp_path / "secret.csv"
    outside.write_bytes(HEADER + numbered(1))
    link = isettings.upload_dir / f"link-{uuid.uuid4().hex}.csv"
    os.symlink(outside, link)
    ok = write(isettings, HEADER + numbered(1))
    path = {"missing.csv": str(isettings.upload_dir / "missing.csv"), "link.csv": str(link),
            "ok.csv": str(ok)}.get(file, file)
    job_id = uuid.uuid4().hex
    with pytest.raises(PermanentError):
        run_import_task(context(isettings, job_id, {"file": path, "table": table}))
    with store.connect(isettings) as conn:
        rec = store.get_job(conn, job_id)
    assert rec is not None
    assert (rec.state, rec.error) == ("FAILURE", reason.format(path=path))
    assert Progress(isettings).read(job_id)["state"] == "FAILURE"


def test_a_message_without_job_row_and_with_bad_args_fails_without_a_record(isettings, db):
    job_id = uuid.uuid4().hex
    with pytest.raises(InvalidMessage, match="invalid arguments: args.table must be a table name"):
        run_import_task(context(isettings, job_id, {"file": "x.csv"}))
    with store.connect(isettings) as conn:
        assert store.get_job(conn, job_id) is None


def test_a_cancelled_job_is_not_run(isettings, db):
    path = write(isettings, HEADER + numbered(2))
    job_id = uuid.uuid4().hex
    with store.connect(isettings) as conn:
        store.create_job(conn, store.JobRecord(id=job_id, target_table="people", file_path=str(path)))
        assert store.request_cancel(conn, job_id).state == "CANCELLED"  # type: ignore[union-attr]
    rec, raised = run_import(isettings, path, job_id=job_id)
    assert raised is None and rec.state == "CANCELLED"
    assert rows(db) == []


def test_connection_killed_mid_import_is_a_transient_error_and_rolls_back(isettings, db):
    path = write(isettings, HEADER + numbered(20000))
    job_id = uuid.uuid4().hex
    ctx = context(isettings, job_id, {"file": str(path), "table": "people", "options": {"batch_bytes": 512}})

    def kill_backend() -> None:
        progress = Progress(isettings)
        wait_for(lambda: int((progress.read(job_id) or {}).get("rows", 0)) > 0, 20, 0.01, what="rows flowing")
        with psycopg.connect(isettings.database_url, autocommit=True) as admin:
            wait_for(lambda: admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'importd-worker'"
                " AND datname = current_database() AND state <> 'idle'").fetchall(), 20)

    killer = threading.Thread(target=kill_backend)
    killer.start()
    with pytest.raises(TransientError):
        run_import_task(ctx)
    killer.join()
    assert rows(db) == []
    on_import_give_up(ctx, TransientError("connection lost"))
    with store.connect(isettings) as conn:
        rec = store.get_job(conn, job_id)
    assert rec is not None and rec.state == "FAILURE"
    assert rec.error == "gave up after 1 attempts: TransientError: connection lost"


def test_give_up_hook_does_not_touch_a_job_that_already_succeeded(isettings, db):
    rec, _ = run_import(isettings, HEADER + numbered(1))
    ctx = context(isettings, rec.id, {}, attempt=4)
    on_import_give_up(ctx, TransientError("late"))
    on_import_retry(ctx, TransientError("late"))
    with store.connect(isettings) as conn:
        after = store.get_job(conn, rec.id)
    assert after is not None and dataclasses.astuple(after) == dataclasses.astuple(rec)


@pytest.mark.parametrize("mode", ["atomic", "resumable"])
def test_cancel_requested_while_running_stops_between_batches(isettings, db, mode):
    path = write(isettings, HEADER + numbered(20000))
    job_id = uuid.uuid4().hex
    args = {"file": str(path), "table": "people", "mode": mode, "options": {"batch_bytes": 512}}

    def cancel_once_rows_flow() -> None:
        progress = Progress(isettings)
        wait_for(lambda: int((progress.read(job_id) or {}).get("rows", 0)) > 0, 20, 0.01)
        with store.connect(isettings) as conn:
            store.request_cancel(conn, job_id)

    canceller = threading.Thread(target=cancel_once_rows_flow)
    canceller.start()
    run_import_task(context(isettings, job_id, args))
    canceller.join()
    with store.connect(isettings) as conn:
        rec = store.get_job(conn, job_id)
    assert rec is not None and (rec.state, rec.error) == ("CANCELLED", "cancelled on request")
    loaded = db.execute("SELECT count(*) FROM people").fetchone()[0]
    assert loaded == rec.rows_imported == (0 if mode == "atomic" else rec.checkpoint_rows)
    assert loaded < 20000
    assert Progress(isettings).events(job_id)[-1][1]["type"] == "final"


def test_retry_hook_leaves_a_job_alone_while_another_delivery_holds_its_lock(isettings, db):
    job_id = uuid.uuid4().hex
    with store.connect(isettings) as conn:
        store.create_job(conn, store.JobRecord(id=job_id, state="STARTED"))
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (lock_key(job_id),))
        on_import_retry(context(isettings, job_id, {}, attempt=2), TransientError("redelivered"))
        assert store.get_job(conn, job_id).state == "STARTED"  # type: ignore[union-attr]
    on_import_retry(context(isettings, job_id, {}, attempt=2), TransientError("redelivered"))
    with store.connect(isettings) as conn:
        rec = store.get_job(conn, job_id)
    assert rec is not None and (rec.state, rec.attempts, rec.error) == ("RETRY", 2, "TransientError: redelivered")


def test_a_permanent_error_of_a_run_that_lost_its_lock_leaves_the_job_to_the_delivery_that_holds_it(
        isettings, db, monkeypatch):
    """The fence on a run's FAILURE (issue 12 item 4, for the final state as for checkpoints):
    a run whose lock went (its main backend died) and that then meets a permanent error must not
    end the job that another delivery has taken over and is running; that delivery writes the
    outcome. Without the fence the job read FAILURE while the other run went on loading it."""
    job_id = uuid.uuid4().hex
    path = write(isettings, HEADER + numbered(3))
    with store.connect(isettings) as conn:
        store.create_job(conn, store.JobRecord(id=job_id, target_table="people", file_path=str(path)))
    other = store.connect(isettings)  # the delivery that took the job over

    def lose_the_lock_then_fail(self: run.ImportRun) -> None:
        assert other.execute(run.TRY_LOCK, (lock_key(job_id),)).fetchone() == (True,)
        self.conn.execute("SELECT no_such_column FROM people")  # a real permanent error: 42703

    monkeypatch.setattr(run.ImportRun, "run", lose_the_lock_then_fail)
    try:
        with pytest.raises(PermanentError):
            run_import_task(context(isettings, job_id, {"file": str(path), "table": "people"}))
        with store.connect(isettings) as conn:
            assert store.get_job(conn, job_id).state == "PENDING"  # type: ignore[union-attr]
    finally:
        other.close()
    monkeypatch.undo()  # the lock is free again: the same error of a run that holds it is recorded
    monkeypatch.setattr(run.ImportRun, "run", lambda self: self.conn.execute("SELECT no_such_column FROM people"))
    with pytest.raises(PermanentError):
        run_import_task(context(isettings, job_id, {"file": str(path), "table": "people"}))
    with store.connect(isettings) as conn:
        rec = store.get_job(conn, job_id)
    assert rec is not None and rec.state == "FAILURE" and "no_such_column" in (rec.error or "")


def _kept_connection(settings: Any) -> Any:
    """The idle connection the engine's Runtime keeps for the next in-process run."""
    from importd.imports.runtime import Runtime

    conn = Runtime.of(context(settings, "any", {})).idle_connection
    assert conn is not None
    return conn


def test_a_finished_job_leaves_its_connection_to_the_next_one_without_its_lock_or_temp_tables(isettings, db):
    first, _ = run_import(isettings, b"sku,qty\na,1\n", "items", options={"on_conflict": "skip"})
    conn = _kept_connection(isettings)
    pid = conn.info.backend_pid
    with store.connect(isettings) as other:  # the first job's lock is free
        assert other.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                             (lock_key(first.id),)).fetchone() == (True,)
    second, _ = run_import(isettings, b"id,name\n1,a\n", options={"on_conflict": "skip"})
    assert (first.state, second.state) == ("SUCCESS", "SUCCESS")
    assert _kept_connection(isettings).info.backend_pid == pid


def test_a_kept_connection_closed_by_the_server_is_replaced_without_failing_the_job(isettings, db):
    run_import(isettings, b"id,name\n1,a\n")
    kept = _kept_connection(isettings)
    db.execute("SELECT pg_terminate_backend(%s)", (kept.info.backend_pid,))
    rec, raised = run_import(isettings, b"id,name\n2,b\n")
    assert raised is None and rec.state == "SUCCESS"
    assert rows(db, "SELECT id FROM people ORDER BY id") == [(1,), (2,)]


def test_the_one_statement_lock_and_start_starts_only_a_job_whose_lock_it_took(isettings, db):
    """The lock and the STARTED update share one statement (issue 15): held elsewhere, the job
    row stays as it was; free, the row is STARTED and the lock stays with the session."""
    job_id = uuid.uuid4().hex
    key = run.lock_key(job_id)
    with store.connect(isettings) as conn:
        store.create_job(conn, store.JobRecord(id=job_id, target_table="public.people", file_path="x.csv"))
        with store.connect(isettings) as holder:
            holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
            assert store.lock_and_start(conn, run.TRY_LOCK, key, job_id, 1, "w") == (False, None)
            assert store.get_job(conn, job_id).state == "PENDING"  # type: ignore[union-attr]
            holder.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
        locked, started = store.lock_and_start(conn, run.TRY_LOCK, key, job_id, 1, "w")
        assert locked and started is not None and (started.state, started.attempts, started.worker) == (
            "STARTED", 1, "w")
        with store.connect(isettings) as other:
            assert not run.try_lock(other, job_id)
