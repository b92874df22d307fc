"""Issue 12 item 4: two COPY streams, one lock; a lost lock stops the run, never duplicates rows.

A resumable import loads on two connections; the job's advisory lock is on the first. The
test stops the second stream inside its checkpoint commit (a trigger on ``importd.jobs``
makes a session that holds no advisory lock wait for a gate the test holds; the second
stream is then ``active``, waiting on a lock), terminates the lock-holding backend, and runs
a second delivery of the job while the first run's second stream is still about to commit.
Then the gate opens and every delivery runs to its end; more deliveries follow until the job
is SUCCESS. The target table has no unique key, so a batch loaded twice would show: every
row must be there exactly once.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from importd.errors import TransientError
from importd.imports import store
from tests.support import report
from tests.support.fence import Delivery, checkpoint_gate, lock_holders, waiting_on_gate
from tests.support.importing import write
from tests.support.infra import wait_for

TABLE = "public.fence_rows"
GATE_KEY = 640_917
ROWS = 3000
BATCH_BYTES = 4096


@pytest.fixture
def fence(isettings: Any, db: psycopg.Connection[Any]) -> Iterator[Any]:
    db.execute("DROP TABLE IF EXISTS fence_rows")
    db.execute("CREATE TABLE fence_rows (id bigint NOT NULL, name text)")  # no unique key on purpose
    try:
        with checkpoint_gate(db, GATE_KEY, "test_fence_gate"):
            yield dataclasses.replace(isettings, tables=TABLE, import_streams=2)
    finally:
        db.execute("DROP TABLE IF EXISTS fence_rows")


def test_a_run_that_lost_its_lock_cannot_commit_a_batch_a_redelivery_loads_again(
        fence, db: psycopg.Connection[Any]):
    data = b"id,name\n" + b"".join(b"%d,name number %d\n" % (i, i) for i in range(1, ROWS + 1))
    path = write(fence, data)
    job_id = uuid.uuid4().hex
    args = {"file": str(path), "table": "fence_rows", "mode": "resumable", "options": {"batch_bytes": BATCH_BYTES}}
    db.execute("SELECT pg_advisory_lock(%s)", (GATE_KEY,))
    first = Delivery(fence, job_id, args, 1)
    first.start()
    (stream_two,) = wait_for(lambda: waiting_on_gate(db, GATE_KEY), 60, what="the second stream at its commit")
    holders = lock_holders(db, GATE_KEY)
    assert len(holders) == 1, db.execute("SELECT * FROM pg_locks WHERE locktype = 'advisory'").fetchall()
    holder = holders[0]
    assert holder != stream_two
    db.execute("SELECT pg_terminate_backend(%s)", (holder,))
    wait_for(lambda: holder not in lock_holders(db, GATE_KEY), 30, what="the lock released")

    second = Delivery(fence, job_id, args, 2)
    second.start()
    # The second delivery has read the checkpoint and is loading: its own second stream waits
    # at the gate too (its first stream commits freely, it holds the lock).
    wait_for(lambda: len(waiting_on_gate(db, GATE_KEY)) == 2, 60, what="the second delivery loading")
    db.execute("SELECT pg_advisory_unlock(%s)", (GATE_KEY,))  # everybody goes on now
    first.join()
    second.join()
    assert isinstance(first.raised, TransientError), first.raised  # retried, not an outcome

    attempt = 3
    while True:
        with store.connect(fence) as conn:
            rec = store.get_job(conn, job_id)
        assert rec is not None
        if rec.finished:
            break
        assert attempt < 10, rec
        delivery = Delivery(fence, job_id, args, attempt)
        delivery.start()
        delivery.join()
        attempt += 1
    got, unique, low, high = db.execute(
        "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM fence_rows").fetchone()  # type: ignore[misc]
    report.add(faults_injected=1, faults_hit=1, jobs_run=1, rows_checked=got,
               rows_lost=max(0, ROWS - unique), rows_duplicated=got - unique)
    report.add_paths({"lost lock: batch refused, redelivery loaded it": 1})
    assert (rec.state, rec.rows_imported) == ("SUCCESS", ROWS)
    assert (got, unique, low, high) == (ROWS, ROWS, 1, ROWS)
