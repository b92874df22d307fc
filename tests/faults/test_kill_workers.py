"""Workers SIGKILLed at random moments during 20 concurrent imports, in both modes."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.faults.conftest import WORKER_ENV, audit, states, submit_files


@pytest.mark.parametrize("mode", ["atomic", "resumable"])
def test_random_sigkills_during_twenty_imports_lose_and_duplicate_nothing(
        mode, fsettings, fault_db, broker, publisher, start_worker):
    """Protection proved: ack only after the outcome is durable, one transaction per job
    (atomic) or per batch with its checkpoint (resumable), the per-job advisory lock, and
    redelivery counted as an attempt. Acking early or committing rows apart from the
    checkpoint would show here as lost or duplicated rows."""
    rng = random.Random(20261129 + len(mode))
    batch = submit_files(fsettings, publisher, count=20, rows=60_000, mode=mode, seed=rng.randrange(1000),
                         batch_bytes=256 * 1024)
    kills = 0
    with start_worker("-Q", "import_queue,bulk_ops_queue", "-c", "2", **WORKER_ENV) as w:
        w.wait_consuming(2)
        deadline = time.monotonic() + 60
        while kills < 6 and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.1, 0.6))
            if all(s in ("SUCCESS", "FAILURE") for s in states(fsettings, list(batch.jobs)).values()):
                break
            pids = w.child_pids()
            if pids:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
        audit(fsettings, fault_db, broker, batch, faults=kills, timeout=240)
    assert kills >= 1
