"""Issue 12 item 3: replaying a dead letter runs its job again, once, whatever it died of.

Each test makes a job die one way (retries exhausted, worker lost = redelivered past
max_retries, expired by a TTL, rejected by a consumer), replays it with ``importd
replay-dlq`` to a real worker, and checks that the job ran again once: it ends SUCCESS with
every row in the table once, and its ``history`` holds exactly one entry, the state it was
reopened from. A second copy of the same replay reopens nothing; a job that ended SUCCESS is
never run again by a replay.

A trigger on ``people`` is the test's hand on the run: while ``replay_gate.errcode`` is set
it raises that SQLSTATE (40001: transient, P0001: permanent), and while the test holds the
exclusive advisory lock :data:`GATE_KEY` it waits (so the worker can be killed mid-run).
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kombu import Producer

from importd.imports import store
from importd.imports.options import job_from_args
from importd.imports.progress import Progress
from importd.ops import dlq
from importd.worker import topology
from importd.worker.messages import Job
from importd.worker.publisher import send
from tests.support.cli import run_cli
from tests.support.importing import TABLES, write
from tests.support.infra import Broker, wait_for

WORKER_ARGS = ("-Q", "import_queue", "-c", "1")
WORKER_ENV = {"IMPORTD_TABLES": TABLES, "IMPORTD_RATE_LIMIT": "none"}
DATA = b"id,name,age\n1,ann,31\n2,bob,42\n3,cy,53\n"
GATE_KEY = 771_203


@pytest.fixture
def gate(db: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """The trigger described in the module docstring; ``db`` sets ``replay_gate.errcode``."""
    db.execute("CREATE TABLE replay_gate (errcode text)")
    db.execute("INSERT INTO replay_gate VALUES (NULL)")
    db.execute(f"""
        CREATE FUNCTION replay_gate() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE e text;
        BEGIN
            PERFORM pg_advisory_xact_lock_shared({GATE_KEY});
            SELECT errcode INTO e FROM replay_gate;
            IF e IS NOT NULL THEN
                RAISE EXCEPTION 'refused by the test gate' USING ERRCODE = e;
            END IF;
            RETURN NEW;
        END $$""")
    db.execute("CREATE TRIGGER replay_gate BEFORE INSERT ON people FOR EACH ROW EXECUTE FUNCTION replay_gate()")
    try:
        yield db
    finally:
        db.execute("SELECT pg_advisory_unlock_all()")
        db.execute("DROP TRIGGER IF EXISTS replay_gate ON people")
        db.execute("DROP FUNCTION IF EXISTS replay_gate()")
        db.execute("DROP TABLE IF EXISTS replay_gate")


def _set_gate(db: psycopg.Connection[Any], errcode: str | None) -> None:
    db.execute("UPDATE replay_gate SET errcode = %s", (errcode,))


def _publish(settings: Any, broker: Broker, path: Path, *, attempt: int = 1, expiration_ms: int | None = None
             ) -> str:
    """A job row (PENDING) and its message on import_queue."""
    job = Job(uuid.uuid4().hex, "import.csv", {"file": str(path), "table": "people"}, attempt=attempt)
    with store.connect(settings) as conn:
        store.create_job(conn, job_from_args(job))
    spec = topology.queue_spec("import_queue")
    send(Producer(broker.channel()), job.body(), exchange=spec.exchange, routing_key=spec.routing_key,
         headers=job.headers(), message_id=job.job_id, expiration_ms=expiration_ms)
    return job.job_id


def _job(settings: Any, job_id: str) -> store.JobRecord:
    with store.connect(settings) as conn:
        rec = store.get_job(conn, job_id)
    assert rec is not None
    return rec


def _finished(settings: Any, job_id: str, what: str) -> store.JobRecord:
    return wait_for(lambda: (lambda j: j if j.finished else None)(_job(settings, job_id)), 90, what=what)


def _dead(broker: Broker, job_id: str) -> dlq.DeadLetter:
    """The job's dead letter, described (left in the queue)."""
    wait_for(lambda: broker.depth("failed_tasks") >= 1, 90, what="a dead letter")
    channel = broker.channel()
    found = None
    for _ in range(broker.depth("failed_tasks")):
        raw = channel.basic_get("failed_tasks", no_ack=False)
        if raw is not None and raw.properties.get("message_id") == job_id:
            found = dlq.describe(raw)
    broker.reconnect()  # everything fetched goes back, unacked
    assert found is not None
    return found


def _replay(settings: Any, job_id: str) -> None:
    out = run_cli(settings, "replay-dlq", "--job", job_id)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("moved") == 1, out.stdout


def _assert_ran_again_once(settings: Any, db: psycopg.Connection[Any], job_id: str, reopened_from: set[str]
                           ) -> store.JobRecord:
    final = _finished(settings, job_id, "replayed job finished")
    assert (final.state, final.rows_imported, final.attempts) == ("SUCCESS", 3, 1)
    assert len(final.history) == 1 and final.history[0]["state"] in reopened_from, final.history
    assert final.history[0]["replay_id"]
    assert db.execute("SELECT count(*), count(DISTINCT id) FROM people").fetchone() == (3, 3)
    progress = Progress(settings)  # its Redis record started over: one end, the new one (items 3, 7)
    finals = [e for _, e in progress.events(job_id) if e["type"] == "final"]
    progress.close()
    assert [e["state"] for e in finals] == ["SUCCESS"], finals
    return final


def test_replay_of_a_job_that_ran_out_of_retries_reopens_its_failure_and_runs_it_once(
        isettings, db, gate, broker, start_worker):
    _set_gate(gate, "40001")  # a serialization failure on every attempt: transient
    job_id = _publish(isettings, broker, write(isettings, DATA))
    with start_worker(*WORKER_ARGS, **WORKER_ENV) as w:
        w.wait_consuming()
        failed = _finished(isettings, job_id, "job gave up")
        assert failed.state == "FAILURE" and failed.attempts == 4 and not failed.history
        assert _dead(broker, job_id).reason == "max-retries"
        _set_gate(gate, None)
        _replay(isettings, job_id)
        final = _assert_ran_again_once(isettings, db, job_id, {"FAILURE"})
    assert "gave up after 4 attempts" in final.history[0]["error"]
    assert final.history[0]["attempts"] == 4 and final.history[0]["finished_at"]
    assert broker.depth("failed_tasks") == 0


def test_two_copies_of_one_replayed_dead_letter_reopen_the_job_once(isettings, db, gate, broker, start_worker):
    """A replay killed between its publish and its ack leaves the dead letter in place; run
    again, it publishes a second copy with the same replay id. The job runs once."""
    _set_gate(gate, "40001")
    job_id = _publish(isettings, broker, write(isettings, DATA))
    with start_worker(*WORKER_ARGS, **WORKER_ENV) as w:
        w.wait_consuming()
        assert _finished(isettings, job_id, "job gave up").state == "FAILURE"
        dead = _dead(broker, job_id)
        broker.purge_all()
        _set_gate(gate, "P0001")  # the replayed run fails for good: a second reopening would show
        headers = dlq.replay_headers(dead.raw.headers, False, dlq.replay_id(dead))
        for _ in range(2):
            send(Producer(broker.channel()), dead.raw.body, exchange=dead.exchange or "",
                 routing_key=dead.routing_key or "", headers=headers, message_id=job_id)
        wait_for(lambda: _job(isettings, job_id).history and _job(isettings, job_id).finished
                 and all(d == 0 for d in broker.depths().values()), 90, what="both copies consumed")
        final = _job(isettings, job_id)
    assert final.state == "FAILURE" and "refused by the test gate" in (final.error or "")
    assert len(final.history) == 1  # reopened by the first copy only; the second found it final


def test_replay_of_a_job_whose_worker_was_lost_past_max_retries_runs_it_once(
        isettings, db, gate, broker, start_worker):
    gate.execute("SELECT pg_advisory_lock(%s)", (GATE_KEY,))  # the run waits in the trigger
    job_id = _publish(isettings, broker, write(isettings, DATA), attempt=4)  # its last attempt
    with start_worker(*WORKER_ARGS, **WORKER_ENV) as w:
        w.wait_consuming()
        waiting = wait_for(lambda: gate.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND NOT granted",
            (GATE_KEY,)).fetchone(), 60, what="the run waiting in the trigger")
        (child,) = w.child_pids()
        os.kill(child, signal.SIGKILL)
        gate.execute("SELECT pg_terminate_backend(%s)", (waiting[0],))  # its backend goes too
        dead = _dead(broker, job_id)
        assert dead.reason == "worker-lost"
        gate.execute("SELECT pg_advisory_unlock(%s)", (GATE_KEY,))
        before = _job(isettings, job_id).state
        assert before in ("FAILURE", "STARTED")  # STARTED: the give-up saw the dying backend's lock
        _replay(isettings, job_id)
        _assert_ran_again_once(isettings, db, job_id, {before})


def _expire(settings: Any, broker: Broker, path: Path) -> str:
    return _publish(settings, broker, path, expiration_ms=1)


def _reject(settings: Any, broker: Broker, path: Path) -> str:
    job_id = _publish(settings, broker, path)
    channel = broker.channel()
    msg = wait_for(lambda: channel.basic_get("import_queue", no_ack=False), 20, what="the message")
    channel.basic_reject(msg.delivery_tag, requeue=False)
    return job_id


@pytest.mark.parametrize(("reason", "kill"), [("expired", _expire), ("rejected", _reject)])
def test_replay_of_a_job_rabbitmq_dead_lettered_runs_it_once(isettings, db, broker, start_worker, reason, kill):
    job_id = kill(isettings, broker, write(isettings, DATA))
    assert _dead(broker, job_id).reason == reason
    assert _job(isettings, job_id).state == "PENDING"
    with start_worker(*WORKER_ARGS, **WORKER_ENV) as w:
        w.wait_consuming()
        _replay(isettings, job_id)
        _assert_ran_again_once(isettings, db, job_id, {"PENDING"})


def test_replay_never_runs_a_job_that_ended_success_again(isettings, db, broker, start_worker):
    path = write(isettings, DATA)
    job_id = _publish(isettings, broker, path)
    with start_worker(*WORKER_ARGS, **WORKER_ENV) as w:
        w.wait_consuming()
        done = _finished(isettings, job_id, "job succeeded")
        assert done.state == "SUCCESS"
    spec = topology.queue_spec("import_queue")  # a stray copy of its message dies of its TTL
    job = Job(job_id, "import.csv", {"file": str(path), "table": "people"})
    send(Producer(broker.channel()), job.body(), exchange=spec.exchange, routing_key=spec.routing_key,
         headers=job.headers(), message_id=job_id, expiration_ms=1)
    assert _dead(broker, job_id).reason == "expired"
    with start_worker(*WORKER_ARGS, **WORKER_ENV) as w:
        w.wait_consuming()
        _replay(isettings, job_id)
        wait_for(lambda: all(d == 0 for d in broker.depths().values()), 30, what="the replayed copy consumed")
    after = _job(isettings, job_id)
    assert (after.state, after.history, after.updated_at) == ("SUCCESS", [], done.updated_at)
    assert db.execute("SELECT count(*) FROM people").fetchone() == (3,)
