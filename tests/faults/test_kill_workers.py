"""Workers SIGKILLed while they run imports (20 concurrent imports, in both modes)."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.faults.conftest import FINAL, WORKER_ENV, audit, states, submit_files
from tests.faults.evidence import REDELIVERY, RESUMED, EventLog, Evidence, running

#: SIGKILLs per scenario (each aimed at a child that the job table shows running a job).
KILLS = 6


@pytest.mark.parametrize("mode", ["atomic", "resumable"])
def test_sigkills_of_children_running_imports_lose_and_duplicate_nothing(
        mode, fsettings, fault_db, broker, events: EventLog, publisher, start_worker):
    """Protection proved: ack only after the outcome is durable, one transaction per job
    (atomic) or per batch with its checkpoint (resumable), the per-job advisory lock, and
    redelivery counted as an attempt. Acking early or committing rows apart from the
    checkpoint would show here as lost or duplicated rows.

    Each kill is aimed at a child whose pid the job table names as running a STARTED job (read
    just before the kill); afterwards that job must show the redelivery counted as its next
    attempt, and (resumable) a job killed past a checkpoint must finish from it."""
    rng = random.Random(20261129 + len(mode))
    batch = submit_files(fsettings, publisher, count=20, rows=60_000, mode=mode, seed=rng.randrange(1000),
                         batch_bytes=256 * 1024)
    ev = Evidence(f"sigkill ({mode})", fsettings)
    killed: set[int] = set()
    with start_worker("-Q", "import_queue,bulk_ops_queue", "-c", "2", **WORKER_ENV) as w:
        w.wait_consuming(2)
        deadline = time.monotonic() + 60  # stop injecting after this; not an assertion
        while len(ev.hits) < KILLS and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.1, 0.6))
            if all(s in FINAL for s in states(fsettings, list(batch.jobs)).values()):
                break
            children = set(w.child_pids()) - killed  # a killed child lingers as a zombie until reaped
            busy = [r for r in running(fsettings, batch.jobs) if r.pid in children]
            past_checkpoint = [r for r in busy if r.checkpoint > 0]
            if not busy:
                continue  # nothing in flight: no fault injected
            target = rng.choice(past_checkpoint if mode == "resumable" and past_checkpoint else busy)
            assert target.pid is not None
            os.kill(target.pid, signal.SIGKILL)
            killed.add(target.pid)
            ev.hit("SIGKILL of the child running the job", [target], f"pid {target.pid}")
        audit(fsettings, fault_db, broker, batch, worker=w, timeout=240)
    for h in list(ev.hits):  # each kill needs its own redelivery: the one of the attempt it killed
        job = h.jobs[0]
        if not events.of(job.id, "retried", "worker-lost", attempt=job.attempts + 1):
            ev.demote(h, f"job {job.id} attempt {job.attempts} shows no redelivery")
    ev.observe(events)
    if mode == "resumable":
        ev.resumed()
    ev.record()
    assert ev.paths[REDELIVERY] >= len(ev.hits), dict(ev.paths)
    if mode == "resumable":
        assert ev.paths[RESUMED] >= 1, (dict(ev.paths), ev.hits)
