"""Shared machinery of the fault suite: files, submission, and the exactly-once audit.

Every scenario ends with :func:`audit`: each job reached SUCCESS or FAILURE, the target
table holds every good row exactly once (a table without a unique key, so a duplicate would
show instead of failing the load), no message is left in a work or retry queue, ready or
unacked (counted after the workers stopped, when the broker has requeued what they held), and
failed_tasks holds exactly the jobs that should be there. Scenarios that inject faults pass an
:class:`~tests.faults.evidence.Evidence`; the audit records it (and fails when every fault
missed running work).
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from importd.config import Settings
from importd.imports import store
from importd.imports.submit import submit
from importd.worker import topology
from importd.worker.publisher import Publisher
from tests.faults.evidence import EventLog, Evidence
from tests.support import report
from tests.support.infra import Broker, WorkerProcess, rabbitmqctl, wait_for
from tests.support.proxy import Proxy


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every fault scenario runs in the serial phase of ``make test``: it stops or slows what
    other tests share, and its fault summary is counted in one process."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.serial)

TABLE = "public.fault_rows"
#: No unique key on purpose: the audit counts duplicates instead of PostgreSQL refusing them.
DDL = "CREATE TABLE public.fault_rows (tag text NOT NULL, n bigint NOT NULL, payload text)"
WORKER_ENV = {"IMPORTD_TABLES": TABLE, "IMPORTD_RATE_LIMIT": "none"}
FINAL = ("SUCCESS", "FAILURE", "CANCELLED")


@dataclass
class Batch:
    """Files submitted in one scenario: job id -> (tag, rows)."""

    jobs: dict[str, tuple[str, int]] = field(default_factory=dict)


@pytest.fixture(scope="session")
def fsettings(settings: Settings) -> Settings:
    store.migrate(settings)
    return dataclasses.replace(settings, tables=TABLE, rate_limit="none")


@pytest.fixture
def fault_db(fsettings: Settings) -> Iterator[psycopg.Connection[Any]]:
    with store.connect(fsettings) as conn:
        conn.execute("DROP TABLE IF EXISTS public.fault_rows")
        conn.execute(DDL)
        yield conn


@pytest.fixture
def events(broker: Broker) -> Iterator[EventLog]:
    """Every job event of this test, in a queue of its own (bound before any worker starts)."""
    log = EventLog(broker)
    yield log
    log.close()


@pytest.fixture
def publisher(fsettings: Settings) -> Iterator[Publisher]:
    p = Publisher(fsettings)
    yield p
    p.close()


def make_file(settings: Settings, tag: str, rows: int, seed: int) -> Path:
    """A CSV with quoted fields, embedded commas and newlines; rows numbered 1..rows."""
    rng = random.Random(seed)
    path = settings.upload_dir.parent / f"src-{tag}.csv"
    with path.open("wb") as f:
        f.write(b"tag,n,payload\n")
        for start in range(1, rows + 1, 20000):
            f.write(b"".join(
                b'%s,%d,"p %d, %s ""q""\nline2"\n' % (tag.encode(), i, i, str(rng.random()).encode())
                for i in range(start, min(start + 20000, rows + 1))))
    return path


def submit_files(settings: Settings, publisher: Publisher, count: int, rows: int, mode: str,
                 seed: int, **options: Any) -> Batch:
    batch = Batch()
    for i in range(count):
        tag = f"{mode[0]}{seed}x{i}"
        path = make_file(settings, tag, rows, seed * 1000 + i)
        job = submit(settings, path, TABLE, mode=mode, publisher=publisher, options=options or None)
        batch.jobs[job.id] = (tag, rows)
    return batch


def states(settings: Settings, ids: list[str]) -> dict[str, str]:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT id, state FROM importd.jobs WHERE id = ANY(%s)", (ids,)).fetchall()
    return {r[0]: r[1] for r in rows}


def wait_final(settings: Settings, batch: Batch, timeout: float) -> dict[str, str]:
    ids = list(batch.jobs)
    return wait_for(lambda: (s := states(settings, ids)) and all(v in FINAL for v in s.values())
                    and len(s) == len(ids) and s, timeout, interval=0.3, what="every job final")


def stranded_after_stop(broker: Broker, worker: WorkerProcess, kill: bool = False) -> int:
    """Stop ``worker`` (SIGKILL its process group with ``kill``), wait until no queue has a
    consumer (the broker has requeued every delivery the worker held unacked), then count what
    is left in work and retry queues."""
    if kill:
        os.killpg(worker.proc.pid, signal.SIGKILL)
    worker.stop()
    names = [n for n in topology.all_queue_names() if n != "failed_tasks"]

    def declared() -> list[Any]:
        return [broker.channel().queue_declare(n, passive=True) for n in names]

    wait_for(lambda: all(q.consumer_count == 0 for q in declared()), 30, what="no consumer left")
    return sum(int(q.message_count) for q in declared())


#: How long the broker gets to close a partitioned connection on its own (heartbeat timeout)
#: before the test resets it at the proxy, as TCP's retransmission timeout would.
BROKER_GIVES_UP_S = 45.0


def partition_until_both_ends_gave_up(proxy: Proxy, resume: bool = True) -> None:
    """Stall ``proxy`` until the worker has reconnected (a new connection reached the proxy)
    and the broker has closed every connection that was open through it (its heartbeat
    timeout): only then does nothing written during the partition arrive late, as in a real
    partition longer than the heartbeats. Then resume."""
    connected, old = proxy.accepted, proxy.upstream_ports()
    proxy.stall()
    wait_for(lambda: proxy.accepted > connected, 60, what="the worker reconnecting (heartbeat timeout)")

    def broker_peers() -> dict[int, str]:
        out = rabbitmqctl("list_connections", "peer_port", "state", "--no-table-headers")
        fields = (line.split() for line in out.splitlines())
        return {int(f[0]): " ".join(f[1:]) for f in fields if f and f[0].isdigit()}

    try:
        wait_for(lambda: not (old & set(broker_peers())), BROKER_GIVES_UP_S, interval=0.5,
                 what="the broker closing the old connections")
    except AssertionError:
        # RabbitMQ pauses a connection's heartbeat monitor while credit flow blocks it
        # (rabbit_reader:maybe_block), so a partition that starts while a publisher is in
        # flow can outlive any heartbeat: then TCP gives up instead. Do what it does.
        left = {port: state for port, state in broker_peers().items() if port in old}
        print(f"partition: the broker kept {left} past its heartbeat; resetting them as TCP would")
        proxy.reset(old)
        wait_for(lambda: not (old & set(broker_peers())), 30, interval=0.5,
                 what="the broker closing the reset connections")
    if resume:
        proxy.resume()


def audit(settings: Settings, db: psycopg.Connection[Any], broker: Broker, batch: Batch, *,
          worker: WorkerProcess, evidence: Evidence | None = None,
          expect_failed: frozenset[str] = frozenset(), timeout: float = 120) -> None:
    """The exactly-once audit; stops ``worker`` to count stranded messages (ready + unacked)."""
    final = wait_final(settings, batch, timeout)
    failed = {job for job, state in final.items() if state != "SUCCESS"}
    assert failed == set(expect_failed), {j: final[j] for j in failed | set(expect_failed)}
    counts = dict(db.execute("SELECT tag, count(*) FROM fault_rows GROUP BY tag").fetchall())
    distinct = dict(db.execute("SELECT tag, count(DISTINCT n) FROM fault_rows GROUP BY tag").fetchall())
    lost = duplicated = checked = 0
    for job, (tag, rows) in batch.jobs.items():
        expected = 0 if job in expect_failed else rows
        got, unique = counts.get(tag, 0), distinct.get(tag, 0)
        checked += got
        duplicated += got - unique
        lost += max(0, expected - unique)
    wait_for(lambda: all(d == 0 for name, d in broker.depths().items() if name != "failed_tasks"), 60,
             what="work and retry queues empty")
    stranded = stranded_after_stop(broker, worker)
    dead = {m.properties.get("message_id") for m in broker.get_all("failed_tasks")}
    report.add(jobs_run=len(batch.jobs), rows_checked=checked, rows_lost=lost,
               rows_duplicated=duplicated, messages_stranded=stranded)
    if evidence is not None:
        evidence.record()
    assert (lost, duplicated, stranded) == (0, 0, 0)
    assert dead <= set(expect_failed)
