"""Services failing under running imports: broker restart, PostgreSQL backends terminated and
connections refused, Redis gone, a network partition, the broker's consumer_timeout, and a
soft time limit. Each ends with the same audit: nothing lost, nothing twice, nothing stranded.
"""

from __future__ import annotations

import time

import psycopg

from importd.imports import store
from tests.faults.conftest import TABLE, WORKER_ENV, audit, make_file, states, submit_files
from tests.faults.test_consumer_timeout import short_consumer_timeout  # noqa: F401 - fixture
from tests.support.infra import SERVICES, rabbitmqctl, wait_for
from tests.support.proxy import Proxy

WORKER_ARGS = ("-Q", "import_queue,bulk_ops_queue,default", "-c", "2")


def _started(settings, batch) -> bool:
    return any(s in ("STARTED", "SUCCESS") for s in states(settings, list(batch.jobs)).values())


def test_rabbitmq_restart_with_jobs_queued_and_running_loses_nothing(
        fsettings, fault_db, broker, publisher, start_worker):
    """Protection proved: durable queues, persistent messages, publisher confirms, and the
    worker's reconnect loop; an outcome of a dead channel is never acked on a new one."""
    batch = submit_files(fsettings, publisher, count=8, rows=60_000, mode="atomic", seed=11)
    with start_worker(*WORKER_ARGS, **WORKER_ENV) as w:
        w.wait_consuming(2)
        wait_for(lambda: _started(fsettings, batch), 30)
        rabbitmqctl("stop_app")
        time.sleep(2)
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
        broker.reconnect()
        audit(fsettings, fault_db, broker, batch, faults=1, timeout=180)


def test_postgres_backend_terminated_mid_copy_then_connections_refused(
        fsettings, fault_db, broker, publisher, start_worker):
    """Protection proved: psycopg's connection errors and admin shutdown (57P01) are transient
    and retried through the delay queues; the terminated transaction left nothing behind."""
    batch = submit_files(fsettings, publisher, count=6, rows=80_000, mode="atomic", seed=12)
    database = fsettings.database_url.rsplit("/", 1)[1]
    with start_worker(*WORKER_ARGS, **WORKER_ENV) as w, \
            psycopg.connect(fsettings.database_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        w.wait_consuming(2)
        killed = wait_for(lambda: admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s "
            "AND application_name = 'importd-worker' AND query ILIKE 'COPY%%'", (database,)).fetchone()[0], 60,
            interval=0.05, what="a worker backend in COPY")
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                      "AND application_name = 'importd-worker'", (database,))
        time.sleep(3)
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        audit(fsettings, fault_db, broker, batch, faults=killed + 1, timeout=180)


def test_redis_gone_mid_import_and_back_imports_at_full_speed(
        fsettings, fault_db, broker, publisher, start_worker):
    """Protection proved: progress is best effort (short Redis timeouts, errors swallowed), so
    imports neither fail nor stall while Redis is down. The worker reaches Redis through a
    proxy that refuses connections like a stopped server, so the shared Redis stays up."""
    batch = submit_files(fsettings, publisher, count=6, rows=60_000, mode="resumable", seed=13)
    with Proxy(SERVICES.host, SERVICES.redis_port) as proxy, start_worker(
            *WORKER_ARGS, **WORKER_ENV, IMPORTD_REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0") as w:
        w.wait_consuming(2)
        wait_for(lambda: _started(fsettings, batch), 30)
        proxy.down()
        audit(fsettings, fault_db, broker, batch, faults=1, timeout=120)
        proxy.up()


def test_partition_between_worker_and_broker_during_imports(fsettings, fault_db, broker, publisher, start_worker):
    """Protection proved: heartbeats from the connection's owner thread detect the partition,
    the worker reconnects, and the redelivered job finds its rows committed (no-op) or its
    lock held (deferred) instead of importing again."""
    vhost = fsettings.broker_url.rsplit("/", 1)[1]
    batch = submit_files(fsettings, publisher, count=6, rows=80_000, mode="atomic", seed=14)
    with Proxy(SERVICES.host, SERVICES.amqp_port) as proxy, start_worker(
            *WORKER_ARGS, **WORKER_ENV, IMPORTD_HEARTBEAT_S="2",
            IMPORTD_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}") as w:
        w.wait_consuming(2)
        wait_for(lambda: _started(fsettings, batch), 30)
        proxy.stall()
        wait_for(lambda: "broker connection lost" in w.output(), 30)
        proxy.resume()
        audit(fsettings, fault_db, broker, batch, faults=1, timeout=180)


def test_consumer_timeout_below_the_import_duration_imports_once(
        short_consumer_timeout, fsettings, fault_db, broker, publisher, start_worker):  # noqa: F811
    """Protection proved: the per-job advisory lock and the finished-job no-op. The broker
    redelivers a job whose delivery outlived consumer_timeout while it still runs."""
    # 8 KiB batches: a commit every ~100 rows keeps each import running for seconds.
    batch = submit_files(fsettings, publisher, count=2, rows=300_000, mode="resumable", seed=15,
                         batch_bytes=8 * 1024)
    with start_worker(*WORKER_ARGS, **WORKER_ENV) as w:
        w.wait_consuming(2)
        wait_for(lambda: "broker connection lost" in w.output(), 60, what="consumer_timeout fired")
        audit(fsettings, fault_db, broker, batch, faults=1, timeout=180)


def test_soft_time_limit_on_a_resumable_import_keeps_its_checkpoint_and_finishes_next_attempt(
        fsettings, fault_db, broker, start_worker):
    """Protection proved: the import checks its deadline between batches and commits each batch
    with its checkpoint, so the next attempt resumes instead of starting over."""
    from tests.faults.conftest import Batch

    path = make_file(fsettings, "soft", 300_000, 16)
    staged = fsettings.upload_dir / "soft.csv"
    staged.write_bytes(path.read_bytes())
    job_id = broker.publish_job("test.import_soft", {"file": str(staged), "table": TABLE, "mode": "resumable",
                                                      "options": {"batch_bytes": 64 * 1024}})
    batch = Batch({job_id: ("soft", 300_000)})
    with start_worker(*WORKER_ARGS, **WORKER_ENV) as w:
        w.wait_consuming(2)
        audit(fsettings, fault_db, broker, batch, faults=1, timeout=120)
        out = w.output()
    assert "soft time limit reached" in out or "SoftTimeLimitExceeded" in out
    with store.connect(fsettings) as conn:
        rec = store.get_job(conn, job_id)
    assert rec is not None and rec.attempts >= 2
