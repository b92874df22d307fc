"""What a small job costs in round trips (issue 15): counted on real services, never timed.

A small file is mostly round trips: each one is a wake-up of the worker and of a server on the
same two cores. These tests pin the count, so a change that adds one fails here and says so
(docs/benchmarks.md, "Small files: where a job's milliseconds go", has the list and why
each is there). PostgreSQL's are counted from libpq's own protocol trace (each switch from
messages the client sent to messages the server sent is one wait); Redis's by a connection
class that counts what it sends (one send per command, script or pipeline); RabbitMQ's by the
frames an in-process consumer writes.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import redis
from psycopg import pq

from importd import logs
from importd.config import Settings
from importd.imports import store
from importd.imports.handlers import run_import_task
from importd.imports.options import job_from_args
from importd.imports.progress import SOCKET_TIMEOUT_S, Progress
from importd.imports.runtime import KEY, Runtime
from importd.worker import tasks
from importd.worker.consumer import Consumer
from importd.worker.context import JobContext
from importd.worker.messages import Job
from tests.support import infra
from tests.support import tasks as test_tasks  # noqa: F401 - registers test.record in this process
from tests.support.importing import write

#: PostgreSQL round trips of a small clean atomic job on a kept connection: the lock and the
#: start (one statement), the table's catalog, BEGIN, COPY (its start, then the data and its
#: end), the final state with the reject file's summary (one statement), COMMIT with the
#: release of the lock and temporary tables (one query string).
PG_ROUND_TRIPS = 7
#: Redis commands of the same job: the STARTED state with its event, the final state with its
#: event (one script each).
REDIS_COMMANDS = 2
#: Jobs counted (after one that opens the connections).
JOBS = 3


class CountingConnection(redis.Connection):
    """A real Redis connection that counts its sends (each is followed by a wait for the reply)."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)


def _context(settings: Settings, resources: dict[str, Any], path: Path) -> JobContext:
    """A job as submitted: its row in the table (made here on a connection of its own), then
    its delivery's context."""
    spec = tasks.get("import.csv")
    assert spec is not None
    job_id = uuid.uuid4().hex
    job = Job(job_id=job_id, task="import.csv", args={"file": str(path), "table": "people"})
    with store.connect(settings) as conn:
        store.create_job(conn, job_from_args(job))
    return JobContext(job=job, spec=spec, settings=settings, queue="import_queue", log=logs.get("test", job_id=job_id),
                      resources=resources)


def _round_trips(trace: str) -> int:
    """Waits for the server in a libpq trace: each run of server messages after client ones."""
    sides = [line.split("\t", 1)[0] for line in trace.splitlines() if line[:2] in ("F\t", "B\t")]
    return sum(1 for before, after in zip(sides, sides[1:], strict=False) if (before, after) == ("F", "B"))


def test_a_small_clean_job_costs_seven_postgresql_round_trips_and_two_redis_commands(isettings, db):
    client = redis.Redis.from_url(isettings.redis_url, socket_timeout=SOCKET_TIMEOUT_S, decode_responses=True,
                                  connection_class=CountingConnection)
    runtime = Runtime(isettings, progress=Progress(isettings, client=client))
    resources: dict[str, Any] = {KEY: runtime}
    lines = b"".join(b"%d,name %d\n" % (i, i) for i in range(1, 101))
    run_import_task(_context(isettings, resources, write(isettings, b"id,name\n" + lines)))  # connects
    conn = runtime.idle_connection
    assert conn is not None
    pid = conn.info.backend_pid
    CountingConnection.sends = 0
    with tempfile.TemporaryFile() as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        for n in range(JOBS):
            body = b"".join(b"%d,name %d\n" % (i, i) for i in range(1000 * (n + 1), 1000 * (n + 1) + 100))
            run_import_task(_context(isettings, resources, write(isettings, b"id,name\n" + body)))
        conn.pgconn.untrace()
        trace.seek(0)
        text = trace.read().decode(errors="replace")
    assert runtime.idle_connection is conn and conn.info.backend_pid == pid  # every job on the kept one
    assert db.execute("SELECT count(*) FROM people").fetchone() == (100 * (JOBS + 1),)
    assert _round_trips(text) == PG_ROUND_TRIPS * JOBS, text
    assert CountingConnection.sends == REDIS_COMMANDS * JOBS


def test_a_kept_connection_is_not_probed_before_its_next_job(isettings, db):
    """The kept connection's liveness is not checked with a statement of its own: its first
    statement is the job's lock and start (a broken one is replaced then, see test_run_modes)."""
    runtime = Runtime(isettings)
    resources: dict[str, Any] = {KEY: runtime}
    run_import_task(_context(isettings, resources, write(isettings, b"id,name\n1,a\n")))
    conn = runtime.idle_connection
    assert conn is not None
    with tempfile.TemporaryFile() as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        run_import_task(_context(isettings, resources, write(isettings, b"id,name\n2,b\n")))
        conn.pgconn.untrace()
        trace.seek(0)
        first = next(line for line in trace.read().decode(errors="replace").splitlines() if line.startswith("F\t"))
    assert "pg_try_advisory_lock" in first or "Bind" in first  # a prepared statement: Bind, no text


def _frames_sent(settings: Settings, broker: infra.Broker, jobs: int, log: Path) -> int:
    """Frames an in-process consumer sends to the broker while it runs ``jobs`` successful jobs
    (its connect, declares and close included), from py-amqp's own counter."""
    for _ in range(jobs):
        broker.publish_job("test.record", {"log": str(log)})
    connections: list[Any] = []
    consumer = Consumer(settings, ["default"], max_tasks=jobs,
                        extensions=[lambda _consumer, conn: connections.append(conn.connection)])
    consumer.run()
    assert consumer.done_tasks == jobs and len(connections) == 1
    return int(connections[0].bytes_sent)


def test_a_successful_job_costs_the_worker_one_frame_to_the_broker(settings, broker, tmp_path):
    """An ACK outcome publishes nothing: the one frame a child sends per successful job is its
    ``basic.ack``, and it waits for no reply (a retry or a dead letter adds a confirmed publish)."""
    one = _frames_sent(settings, broker, 1, tmp_path / "one.log")
    more = _frames_sent(settings, broker, 1 + JOBS, tmp_path / "more.log")
    assert (more - one) == JOBS
