"""Services failing under running imports: broker restart, PostgreSQL backends terminated and
connections refused, Redis gone, a network partition, the broker's consumer_timeout, and a
soft time limit. Each ends with the same audit: nothing lost, nothing twice, nothing stranded.

Each scenario records that its fault met a job in flight (the rows in STARTED read at the
moment of injection, an active COPY backend, a refused connection observed) and, after the
audit, the recovery path its docstring names, read from job events and job rows.

These tests stop the broker or change its settings: run them against a private node
(``scripts/rabbitmq-node.sh start t13 5673`` and ``IMPORTD_TEST_AMQP_PORT=5673
IMPORTD_TEST_RABBITMQ_NODE=t13@localhost``) when others share the machine's broker.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import redis

from importd import keys
from importd.imports import progress, store
from tests.faults.conftest import (
    TABLE,
    WORKER_ENV,
    Batch,
    audit,
    make_file,
    partition_until_both_ends_gave_up,
    submit_files,
)
from tests.faults.evidence import (
    FINISHED,
    LOCKED,
    REDELIVERY,
    RETRY,
    SOFT_LIMIT,
    EventLog,
    Evidence,
    Hit,
    job_rows,
    running,
)
from tests.faults.test_consumer_timeout import short_consumer_timeout  # noqa: F401 - fixture
from tests.support.infra import SERVICES, rabbitmqctl, wait_for
from tests.support.proxy import Proxy

WORKER_ARGS = ("-Q", "import_queue,bulk_ops_queue,default", "-c", "2")


def _in_flight(fsettings: Any, batch: Batch) -> list[Any]:
    """Wait until a job of ``batch`` runs; the rows in STARTED."""
    return wait_for(lambda: running(fsettings, batch.jobs), 60, interval=0.05, what="a job running")


def _keep_redelivered(ev: Evidence, h: Hit, events: EventLog) -> None:
    """A job hit by a lost delivery must show that delivery counted as an attempt; demote if none does."""
    if not any(events.of(j.id, "retried", "worker-lost") for j in h.jobs):
        ev.demote(h, f"no job of {[j.id for j in h.jobs]} shows a redelivery")


def test_rabbitmq_restart_with_jobs_queued_and_running_loses_nothing(
        fsettings, fault_db, broker, events: EventLog, publisher, start_worker):
    """Protection proved: durable queues, persistent messages, publisher confirms, and the
    worker's reconnect loop; an outcome of a dead channel is never acked on a new one: the
    running job's delivery comes back, is counted as an attempt, and that attempt finds the
    job finished (no-op) or its lock held (deferred)."""
    # 8 KiB batches: a commit every ~100 rows keeps each import running for seconds, longer
    # than a stop_app takes (an atomic 150k-row import ends before the broker is down).
    # (100,000 rows stopped being enough once a batch commit no longer paid an fsync.)
    batch = submit_files(fsettings, publisher, count=4, rows=250_000, mode="resumable", seed=11,
                         batch_bytes=8 * 1024)
    ev = Evidence("broker restart", fsettings)
    with start_worker(*WORKER_ARGS, **WORKER_ENV) as w:
        w.wait_consuming(2)
        before = {j.id for j in _in_flight(fsettings, batch)}
        rabbitmqctl("stop_app")
        # Hit: jobs that ran as the stop began and still ran once the broker was down.
        at_stop = [j for j in running(fsettings, batch.jobs) if j.id in before]
        h = ev.hit("broker stopped", at_stop) if at_stop else ev.miss(
            "broker stopped", f"ran before: {job_rows(fsettings, before)}")
        time.sleep(2)  # down at least this long (a lower bound)
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
        broker.reconnect()
        audit(fsettings, fault_db, broker, batch, worker=w, timeout=180)
    if h is not None:
        _keep_redelivered(ev, h, events)
    ev.observe(events)
    ev.record()
    ev.require(REDELIVERY)
    ev.require(FINISHED, LOCKED)


def test_postgres_backend_terminated_mid_copy_then_connections_refused(
        fsettings, fault_db, broker, events: EventLog, publisher, start_worker):
    """Protection proved: psycopg's connection errors and admin shutdown (57P01) are transient
    and retried through the delay queues; the terminated transaction left nothing behind."""
    batch = submit_files(fsettings, publisher, count=6, rows=80_000, mode="atomic", seed=12)
    database = fsettings.database_url.rsplit("/", 1)[1]
    ev = Evidence("postgres", fsettings)
    with start_worker(*WORKER_ARGS, **WORKER_ENV) as w, \
            psycopg.connect(fsettings.database_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        w.wait_consuming(2)
        killed = wait_for(lambda: admin.execute(
            "WITH copying AS MATERIALIZED (SELECT pid, query FROM pg_stat_activity WHERE datname = %s"
            " AND application_name = 'importd-worker' AND state = 'active' AND query ILIKE 'COPY%%')"
            " SELECT pid, query FROM copying WHERE pg_terminate_backend(pid)",
            (database,)).fetchall(), 60, interval=0.05, what="a worker backend in an active COPY")
        pids = [pid for pid, _ in killed]
        in_flight = running(fsettings, batch.jobs)
        try:  # landed: the backends are gone
            wait_for(lambda: not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)",
                                               (pids,)).fetchall(), 10, what="the terminated backends gone")
            ev.hit("backend terminated in an active COPY", in_flight, f"backends {pids}")
        except AssertionError:
            ev.miss("backend terminated in an active COPY", f"backends {pids} still there")
        # Work in flight as connections stop: jobs running or waiting for their retry.
        at_refusal = [j for j in job_rows(fsettings, batch.jobs) if j.state in ("STARTED", "RETRY")]
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                          "AND application_name = 'importd-worker'", (database,))
            seen = len(events.drain())
            refused = _refused(fsettings.database_url)
            # Keep refusing until a worker's attempt has failed in the window (a retried event).
            wait_for(lambda: [e for e in events.drain()[seen:] if e.get("type") == "retried"], 60,
                     what="a job retried while connections are refused")
            if refused and at_refusal:
                ev.hit("connections refused", at_refusal, refused)
            else:
                ev.miss("connections refused", f"refused={refused!r}, running={at_refusal}")
        finally:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        audit(fsettings, fault_db, broker, batch, worker=w, timeout=180)
    ev.observe(events)
    ev.record()
    assert len(ev.hits) == 2, ev.missed
    ev.require(RETRY)


def _refused(url: str) -> str:
    """The error of a connection attempt, '' if it was accepted."""
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        return str(exc).strip()
    return ""


def test_redis_gone_mid_import_and_back_imports_at_full_speed(
        fsettings, fault_db, broker, events: EventLog, publisher, start_worker):
    """Protection proved: progress is best effort (short Redis timeouts, errors swallowed), so
    imports neither fail nor stall while Redis is down, and progress is written again once it
    is back. The worker reaches Redis through a proxy that refuses connections like a stopped
    server, so the shared Redis stays up.

    "Full speed" is shown by counts, not by seconds: while Redis is down the running jobs keep
    committing batches (checkpoints rise) and finish, and no attempt fails or is retried."""
    # Many small batches: the running jobs are mid-file when Redis goes, so their checkpoints
    # can be seen rising while it is down.
    batch = submit_files(fsettings, publisher, count=6, rows=150_000, mode="resumable", seed=13,
                         batch_bytes=32 * 1024)
    ev = Evidence("redis outage", fsettings)
    r = redis.Redis.from_url(fsettings.redis_url)
    with Proxy(SERVICES.host, SERVICES.redis_port) as proxy, start_worker(
            *WORKER_ARGS, **WORKER_ENV, IMPORTD_REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0") as w:
        w.wait_consuming(2)
        _in_flight(fsettings, batch)
        proxy.down()
        at_down = {j.id: j for j in running(fsettings, batch.jobs)}
        if proxy.refuses() and at_down:
            ev.hit("redis refused", list(at_down.values()))
        else:
            ev.miss("redis refused", f"running={list(at_down)}")
        wait_for(lambda: any(now.checkpoint > at_down[now.id].checkpoint
                             for now in job_rows(fsettings, at_down)), 60, what="a checkpoint rising with Redis down")
        done_down = wait_for(lambda: [j.id for j in job_rows(fsettings, at_down, "SUCCESS")], 120,
                             what="a running job finished with Redis down")
        # The outage met these jobs' progress: their end has not reached Redis (read before it is back).
        assert all(r.hget(keys.job_state(fsettings.redis_prefix, j), "state") != b"SUCCESS" for j in done_down)
        proxy.up()
        time.sleep(progress.BACKOFF_S)  # at least the back-off after the last failed write (a lower bound)
        after = submit_files(fsettings, publisher, count=1, rows=20_000, mode="resumable", seed=113)
        batch.jobs.update(after.jobs)
        audit(fsettings, fault_db, broker, batch, worker=w, timeout=120)
    # ... and back: the job run after the proxy came up has its progress in Redis again.
    (later,) = after.jobs
    assert r.hget(keys.job_state(fsettings.redis_prefix, later), "state") == b"SUCCESS"
    assert r.hget(keys.job_state(fsettings.redis_prefix, later), "rows") == b"20000"
    # Not stalled into a failure: one attempt each, nothing retried or deferred.
    assert {j.attempts for j in job_rows(fsettings, batch.jobs)} == {1}
    assert [e for e in events.drain() if e.get("type") in ("retried", "deferred")] == []
    ev.record()


def test_partition_between_worker_and_broker_during_imports(
        fsettings, fault_db, broker, events: EventLog, publisher, start_worker):
    """Protection proved: heartbeats from the connection's owner thread detect the partition,
    the worker reconnects, and the redelivered job finds its rows committed (no-op) or its
    lock held (deferred) instead of importing again."""
    vhost = fsettings.broker_url.rsplit("/", 1)[1]
    batch = submit_files(fsettings, publisher, count=6, rows=80_000, mode="atomic", seed=14)
    ev = Evidence("partition", fsettings)
    with Proxy(SERVICES.host, SERVICES.amqp_port) as proxy, start_worker(
            *WORKER_ARGS, **WORKER_ENV, IMPORTD_HEARTBEAT_S="2",
            IMPORTD_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}") as w:
        w.wait_consuming(2)
        at_stall = _in_flight(fsettings, batch)  # read as the partition begins; checked by redelivery after
        partition_until_both_ends_gave_up(proxy)
        h = ev.hit("partition", at_stall)
        audit(fsettings, fault_db, broker, batch, worker=w, timeout=180)
    _keep_redelivered(ev, h, events)
    ev.observe(events)
    ev.record()
    ev.require(REDELIVERY)
    ev.require(FINISHED, LOCKED)


def test_consumer_timeout_below_the_import_duration_imports_once(
        short_consumer_timeout, fsettings, fault_db, broker, events: EventLog, publisher,  # noqa: F811
        start_worker):
    """Protection proved: the per-job advisory lock and the finished-job no-op. The broker
    redelivers a job whose delivery outlived consumer_timeout while it still runs: the other
    child gets it and finds the lock held (deferred), or, once the first run has committed,
    finds the job finished; either way the rows land once."""
    # 8 KiB batches: a commit every ~100 rows keeps the import running well past the moment the
    # broker closes the channel and the child reconnects, even on a loaded machine (300,000 rows
    # once ended first in a CI-like run: a missed fault).
    batch = submit_files(fsettings, publisher, count=1, rows=600_000, mode="resumable", seed=15,
                         batch_bytes=8 * 1024)
    vhost = fsettings.broker_url.rsplit("/", 1)[1]
    ev = Evidence("consumer_timeout", fsettings)
    with Proxy(SERVICES.host, SERVICES.amqp_port) as proxy, start_worker(
            *WORKER_ARGS, **WORKER_ENV,
            IMPORTD_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}") as w:
        w.wait_consuming(2)
        _in_flight(fsettings, batch)
        connected = proxy.accepted
        wait_for(lambda: proxy.accepted > connected, 60, what="a child reconnecting after its channel closed")
        at = running(fsettings, batch.jobs)  # the job still runs after the broker closed its channel
        h = ev.hit("consumer_timeout", at) if at else ev.miss("consumer_timeout", "the job had ended")
        audit(fsettings, fault_db, broker, batch, worker=w, timeout=180)
    if h is not None:
        _keep_redelivered(ev, h, events)
    ev.observe(events)
    ev.record()
    # The redelivery meets the job either still running (its lock held: deferred) or finished
    # (a no-op); which one depends on when the broker closes the channel, so either proves it.
    ev.require(FINISHED, LOCKED)


def test_soft_time_limit_on_a_resumable_import_keeps_its_checkpoint_and_finishes_next_attempt(
        fsettings, fault_db, broker, events: EventLog, start_worker):
    """Protection proved: the import checks its deadline between batches and commits each batch
    with its checkpoint, so the next attempt resumes instead of starting over: no attempt is
    ever seen below the checkpoint the one before it reached, and the attempts together get
    further than the first. (On a loaded machine an attempt may reach its soft limit before
    its first batch commits: no progress, but no step back either.)"""
    path = make_file(fsettings, "soft", 300_000, 16)
    staged = fsettings.upload_dir / "soft.csv"
    staged.write_bytes(path.read_bytes())
    job_id = broker.publish_job("test.import_soft", {"file": str(staged), "table": TABLE, "mode": "resumable",
                                                      "options": {"batch_bytes": 64 * 1024}})
    batch = Batch({job_id: ("soft", 300_000)})
    ev = Evidence("soft time limit", fsettings)
    reached: dict[int, int] = {}  # attempt -> highest checkpoint seen during it
    lowest: dict[int, int] = {}  # attempt -> lowest checkpoint seen during it
    with start_worker(*WORKER_ARGS, **WORKER_ENV) as w:
        w.wait_consuming(2)

        def sample() -> bool:
            rows = job_rows(fsettings, [job_id])
            if rows and rows[0].state == "STARTED":
                attempt, at = rows[0].attempts, rows[0].checkpoint
                reached[attempt] = max(reached.get(attempt, 0), at)
                lowest[attempt] = min(lowest.get(attempt, at), at)
            return bool(rows) and rows[0].state in ("SUCCESS", "FAILURE")

        wait_for(sample, 120, interval=0.02, what="the soft-limited job final")
        audit(fsettings, fault_db, broker, batch, worker=w, timeout=120)
    for e in events.of(job_id, "retried", "soft-time-limit"):
        ev.hit("soft time limit", [], f"attempt {int(e['attempt']) - 1}")
    ev.observe(events, [job_id])
    ev.record()
    ev.require(SOFT_LIMIT)
    with store.connect(fsettings) as conn:
        rec = store.get_job(conn, job_id)
    assert rec is not None and rec.attempts >= 2
    attempts = sorted(reached)
    assert len(attempts) >= 2 and reached[attempts[-1]] > reached[attempts[0]], reached  # got further
    for before, after in zip(attempts, attempts[1:], strict=False):  # never started over
        assert lowest[after] >= reached[before], (before, after, reached, lowest)
