"""Hostile messages: each ends in failed_tasks with its reason, and the worker goes on."""

from __future__ import annotations

import json
import uuid

from amqp.exceptions import AMQPError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import Producer

from importd.worker import messages, topology
from tests.support import hostile, report
from tests.support import tasks as test_tasks
from tests.support.infra import Broker, wait_for

TASK = {messages.TASK_HEADER: "test.record"}

#: (body, headers, content type, priority, the reason expected in failed_tasks)
HOSTILE = [
    (b"not json at all", TASK, "application/json", 0, "not-json"),
    (b'"a json string"', TASK, "application/json", 0, "bad-shape"),
    (b'{"args": {}}', TASK, "application/json", 0, "bad-job-id"),
    (b'{"job_id": "h1", "args": {}, "evil": true}', TASK, "application/json", 0, "bad-shape"),
    (b'{"job_id": "h2", "args": "x"}', TASK, "application/json", 0, "bad-shape"),
    (b'{"job_id": "h3"}', {messages.TASK_HEADER: "os.system"}, "application/json", 0, "unknown-task"),
    (b'{"job_id": "h4"}', {}, "application/json", 0, "missing-task"),
    (b'{"job_id": "h5"}', {**TASK, messages.ATTEMPT_HEADER: "many"}, "application/json", 0, "bad-attempt"),
    (b'{"job_id": "h6"}', TASK, "application/x-python-serialize", 0, "bad-content-type"),
    (b'{"job_id": "h7"}', TASK, "application/json", 200, "bad-priority"),
    (json.dumps({"job_id": "h8", "args": {"pad": "x" * (10 * 1024 * 1024)}}).encode(), TASK,
     "application/json", 0, "body-too-large"),
]


def test_hostile_messages_are_dead_lettered_with_their_reason_and_the_worker_goes_on(
        broker: Broker, start_worker, tmp_path):
    """Protection proved: validation before dispatch (messages.decode) and dead-lettering of
    what fails it. Without it a bad body would crash the child or be requeued forever."""
    log = tmp_path / "runs.jsonl"
    with start_worker("-Q", "default", "-c", "1") as w:
        w.wait_consuming()
        for body, headers, ctype, priority, _ in HOSTILE:
            broker.publish_raw(body, headers, content_type=ctype, priority=priority)
        broker.publish_job("test.record", {"log": str(log)})
        wait_for(lambda: len(test_tasks.runs(log)) == 1, 60, what="the good job after the hostile ones")
        wait_for(lambda: broker.depth("failed_tasks") == len(HOSTILE), 20)
        assert w.proc.poll() is None
        assert "child died" not in w.output()
    dead = broker.get_all("failed_tasks")
    assert sorted(m.headers["x-importd-reason"] for m in dead) == sorted(h[-1] for h in HOSTILE)
    big = next(m for m in dead if m.headers["x-importd-reason"] == "body-too-large")
    assert len(big.body) > 10 * 1024 * 1024  # kept whole: nothing lost, only set aside
    report.add(hostile_inputs=len(HOSTILE), jobs_run=1)


#: Reasons a dead letter of a hostile delivery may carry (messages.decode's, and the last resort's).
DECODE_REASONS = {"not-json", "bad-shape", "bad-job-id", "missing-task", "unknown-task", "bad-attempt",
                  "bad-priority", "bad-content-type", "bad-headers", "bad-properties", "body-too-large", "undecodable"}


def _publish(broker: Broker, d: hostile.Delivery, message_id: str) -> bool:
    """Publish one hostile delivery; False if RabbitMQ itself refused it (it closes the
    connection with INTERNAL_ERROR on some header values): then no worker ever sees it."""
    spec = topology.queue_spec("default")
    try:
        Producer(broker.channel()).publish(d.body, exchange=spec.exchange, routing_key=spec.routing_key,
                                           headers=d.headers, content_type=d.content_type, priority=d.priority,
                                           message_id=message_id, content_encoding="binary", delivery_mode=2,
                                           serializer=None)
    except (AMQPError, ConnectionError, OSError):
        broker.reconnect()
        return False
    return True


def test_no_property_of_a_message_body_crashes_a_child(broker: Broker, start_worker, tmp_path):
    """Issue 12 item 2: batches of hostile deliveries drawn by hypothesis (arbitrary bytes,
    nesting past the recursion limit, huge numbers, wrong types at every field and header)
    followed by a good job. Each hostile delivery ends in failed_tasks with its reason, the
    good job behind them runs, and both children are the ones that started (none exited).
    Before the fix the first deep body killed a child, then the next, while the respawn
    backoff stalled the queue and the message never reached the DLQ."""
    with start_worker("-Q", "default", "-c", "2") as w:
        w.wait_consuming(2)
        children = sorted(w.child_pids())
        assert len(children) == 2
        batches = delivered = 0

        @settings(max_examples=4, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(st.lists(hostile.DELIVERIES.filter(hostile.rejected), min_size=5, max_size=25))
        def batch_then_good_job(batch: list[hostile.Delivery]) -> None:
            nonlocal batches, delivered
            batches += 1
            ids = {f"hostile-{batches}-{i}" for i, d in enumerate(batch)
                   if _publish(broker, d, f"hostile-{batches}-{i}")}
            delivered += len(ids)
            log = tmp_path / f"good-{batches}.jsonl"
            broker.publish_job("test.record", {"log": str(log)})
            wait_for(lambda: len(test_tasks.runs(log)) == 1, 120, what="the good job behind the hostile ones")
            wait_for(lambda: broker.depth("failed_tasks") >= len(ids), 60, what="every hostile one dead-lettered")
            dead = broker.get_all("failed_tasks")
            assert {m.properties["message_id"] for m in dead} == ids
            assert {m.headers["x-importd-reason"] for m in dead} <= DECODE_REASONS
            assert sorted(w.child_pids()) == children, w.output()[-3000:]

        batch_then_good_job()
        assert w.proc.poll() is None
        assert sorted(w.child_pids()) == children
    # Hostile deliveries are the work itself, counted apart from faults (which may miss work).
    report.add(hostile_inputs=delivered, jobs_run=batches)


def test_hostile_import_jobs_end_in_failure_with_their_reason_and_the_worker_goes_on(
        fsettings, fault_db, broker: Broker, start_worker, tmp_path):
    """Protection proved: the import resolves the file inside the upload directory, checks
    the allowlist and the job's arguments before touching the database. Without it
    ``/etc/passwd`` or ``../../x`` would be read, or an unlisted table written."""
    from importd.imports import store
    from tests.faults.conftest import TABLE, WORKER_ENV

    good = fsettings.upload_dir / "good.csv"
    good.write_bytes(b"tag,n,payload\ng,1,x\n")
    outside = fsettings.upload_dir.parent / "outside.csv"
    outside.write_bytes(b"tag,n,payload\no,1,x\n")
    cases = {
        "passwd": ({"file": "/etc/passwd", "table": TABLE}, "outside the upload directory"),
        "dotdot": ({"file": str(fsettings.upload_dir / ".." / "outside.csv"), "table": TABLE},
                   "outside the upload directory"),
        "missing": ({"file": str(fsettings.upload_dir / "nope.csv"), "table": TABLE}, "not found"),
        "table": ({"file": str(good), "table": "pg_catalog.pg_authid"}, "allow"),
        "sqlname": ({"file": str(good), "table": 'fault_rows"; DROP TABLE fault_rows; --'}, "allow"),
    }
    bad_args = {"file": str(good), "table": TABLE, "mode": "yolo"}  # no job row to fail: dead-lettered
    with start_worker("-Q", "import_queue,bulk_ops_queue", "-c", "1", **WORKER_ENV) as w:
        w.wait_consuming()
        ids = {name: broker.publish_job("import.csv", args, job_id=f"hostile-{name}-{uuid.uuid4().hex[:6]}")
               for name, (args, _) in cases.items()}
        dead_id = broker.publish_job("import.csv", bad_args, job_id=f"hostile-args-{uuid.uuid4().hex[:6]}")
        last = broker.publish_job("import.csv", {"file": str(good), "table": TABLE})

        def finished() -> bool:
            with store.connect(fsettings) as conn:
                recs = [store.get_job(conn, i) for i in [*ids.values(), last]]
            return all(r is not None and r.finished for r in recs)

        wait_for(finished, 60, what="every hostile job final")
        assert w.proc.poll() is None
    with store.connect(fsettings) as conn:
        for name, (_, reason) in cases.items():
            rec = store.get_job(conn, ids[name])
            assert rec is not None and rec.state == "FAILURE", (name, rec)
            assert reason in (rec.error or "").lower(), (name, rec.error)
        done = store.get_job(conn, last)
        assert done is not None and done.state == "SUCCESS"
    assert fault_db.execute("SELECT count(*) FROM fault_rows").fetchone() == (1,)
    (dead,) = broker.get_all("failed_tasks")
    assert dead.properties["message_id"] == dead_id and dead.headers["x-importd-reason"] == "bad-args"
    assert "mode" in dead.headers["x-importd-error"]
    report.add(hostile_inputs=len(cases) + 1, jobs_run=len(cases) + 2)
