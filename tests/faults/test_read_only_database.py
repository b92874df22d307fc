"""Issue 12 item 1: an outcome is final only once it is durable.

The database refuses writes (a failover left the worker on a standby; maintenance set
``default_transaction_read_only``), simulated with ``ALTER DATABASE <test db> SET
default_transaction_read_only = on`` so that every new connection is read-only (always
undone in ``finally``). The job must not be acked and lost: it is retried, then
dead-lettered with the reason, its row is not FAILURE, and once writes return a replay of
the dead letter runs it to SUCCESS with each row loaded once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from importd.imports import store
from importd.imports.submit import submit
from importd.worker.publisher import Publisher
from tests.support import report
from tests.support.cli import run_cli
from tests.support.importing import TABLES, write
from tests.support.infra import Broker, wait_for

WORKER_ARGS = ("-Q", "import_queue", "-c", "1")
WORKER_ENV = {"IMPORTD_TABLES": TABLES, "IMPORTD_RATE_LIMIT": "none"}
DATA = b"id,name,age\n1,ann,31\n2,bob,42\n3,cy,53\n"
#: A lock the test holds while a trigger on ``people`` waits for it (an event, not a sleep).
GATE_KEY = 912_412


@contextmanager
def read_only(db: psycopg.Connection[Any]) -> Iterator[None]:
    """New connections to the test database are read-only until the block ends."""
    name = db.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    db.execute("SET default_transaction_read_only = off")
    db.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    try:
        yield
    finally:
        db.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')


def _job(settings: Any, job_id: str) -> store.JobRecord:
    with store.connect(settings) as conn:
        rec = store.get_job(conn, job_id)
    assert rec is not None
    return rec


def _dead_letter(broker: Broker, job_id: str) -> Any:
    """The job's message in failed_tasks (looked at, left in place)."""
    channel = broker.channel()
    found = None
    for _ in range(broker.depth("failed_tasks")):
        msg = channel.basic_get("failed_tasks", no_ack=False)
        if msg is None:
            break
        if msg.properties.get("message_id") == job_id:
            found = msg
    broker.reconnect()  # closes the channel: every message goes back, unacked
    return found


def _replay_and_finish(isettings: Any, db: psycopg.Connection[Any], job_id: str) -> store.JobRecord:
    out = run_cli(isettings, "replay-dlq", "--job", job_id)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("moved") == 1
    return wait_for(lambda: (lambda j: j if j.finished else None)(_job(isettings, job_id)), 60,
                    what="replayed job finished")


def _count(db: psycopg.Connection[Any], expected: int) -> tuple[int, int]:
    """Adds the scenario to the fault summary (the fault met a job: it was dead-lettered with
    the database's refusal); returns (rows, distinct ids) in ``people``."""
    got, unique = db.execute("SELECT count(*), count(DISTINCT id) FROM people").fetchone()  # type: ignore[misc]
    report.add(faults_injected=1, faults_hit=1, jobs_run=1, rows_checked=got,
               rows_lost=max(0, expected - unique), rows_duplicated=got - unique)
    report.add_paths({"dead-lettered, then replayed to SUCCESS": 1})
    return got, unique


@pytest.fixture
def publisher(isettings: Any) -> Iterator[Publisher]:
    pub = Publisher(isettings)
    yield pub
    pub.close()


def test_a_job_that_cannot_start_on_a_read_only_database_is_dead_lettered_not_lost_and_replay_completes_it(
        isettings, db, broker, start_worker, publisher):
    rec = submit(isettings, write(isettings, DATA), "people", publisher=publisher)
    with read_only(db), start_worker(*WORKER_ARGS, **WORKER_ENV) as w:
        w.wait_consuming()
        wait_for(lambda: broker.depth("failed_tasks") == 1, 90, what="the job dead-lettered")
        dead = _dead_letter(broker, rec.id)
        assert dead is not None
        assert dead.headers["x-importd-reason"] == "max-retries"
        assert "ReadOnlySqlTransaction" in dead.headers["x-importd-error"]
        assert int(dead.headers["x-importd-attempts"]) == 4  # every attempt was a retry, none an outcome
        assert _job(isettings, rec.id).state == "PENDING"  # nothing could be written, nothing was claimed
    with start_worker(*WORKER_ARGS, **WORKER_ENV) as w:
        w.wait_consuming()
        final = _replay_and_finish(isettings, db, rec.id)
    assert (final.state, final.rows_imported) == ("SUCCESS", 3)
    assert _count(db, 3) == (3, 3)
    assert broker.depth("failed_tasks") == 0


def test_a_failure_that_cannot_be_recorded_is_retried_then_dead_lettered_and_replay_completes_it(
        isettings, db, broker, start_worker, publisher):
    """The run fails permanently (a trigger refuses the row) just as the database turns
    read-only: FAILURE cannot be written, so the delivery is not acked as an outcome."""
    db.execute(f"""
        CREATE FUNCTION refuse_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock({GATE_KEY});
            RAISE EXCEPTION 'refused by the test trigger';
        END $$""")
    db.execute("CREATE TRIGGER refuse BEFORE INSERT ON people FOR EACH ROW EXECUTE FUNCTION refuse_once()")
    try:
        db.execute("SELECT pg_advisory_lock(%s)", (GATE_KEY,))
        rec = submit(isettings, write(isettings, DATA), "people", publisher=publisher)
        with start_worker(*WORKER_ARGS, **WORKER_ENV) as w:
            w.wait_consuming()
            wait_for(lambda: db.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND NOT granted",
                (GATE_KEY,)).fetchone()[0] == 1, 60, what="the COPY waiting in the trigger")  # type: ignore[index]
            assert _job(isettings, rec.id).state == "STARTED"
            with read_only(db):
                db.execute("SELECT pg_advisory_unlock(%s)", (GATE_KEY,))
                wait_for(lambda: broker.depth("failed_tasks") == 1, 90, what="the job dead-lettered")
                dead = _dead_letter(broker, rec.id)
                assert dead is not None and dead.headers["x-importd-reason"] == "max-retries"
                assert _job(isettings, rec.id).state != "FAILURE"
            db.execute("DROP TRIGGER refuse ON people")
            final = _replay_and_finish(isettings, db, rec.id)
    finally:
        db.execute("SELECT pg_advisory_unlock_all()")
        db.execute("DROP TRIGGER IF EXISTS refuse ON people")
        db.execute("DROP FUNCTION IF EXISTS refuse_once()")
    assert (final.state, final.rows_imported) == ("SUCCESS", 3)
    assert _count(db, 3) == (3, 3)
