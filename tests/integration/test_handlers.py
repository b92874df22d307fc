"""The engine under a real worker subprocess: SIGKILLed mid-import in both modes, each row
lands exactly once, and the resumable import continues from its checkpoint.

The file has the issue's 1,000,000 rows (``IMPORTD_TEST_KILL_ROWS`` makes it smaller for a
quick run); the resumable import uses small batches so that kills land between checkpoints.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from importd.imports import store
from importd.imports.progress import Progress
from importd.imports.submit import submit
from importd.worker.publisher import Publisher
from tests.support.importing import TABLES
from tests.support.infra import wait_for

#: Rows of the generated file.
ROWS = int(os.environ.get("IMPORTD_TEST_KILL_ROWS", "1000000"))
WORKER_ARGS = ("-Q", "import_queue,bulk_ops_queue", "-c", "1")
WORKER_ENV = {"IMPORTD_TABLES": TABLES, "IMPORTD_RATE_LIMIT": "none"}



@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.csv"
    with path.open("wb") as f:
        f.write(b"id,name,amount,note\n")
        step = 50000
        for start in range(1, ROWS + 1, step):
            f.write(b"".join(b'%d,name %d,%d.%02d,"note, with ""quotes""\nand a newline"\n' % (i, i, i, i % 100)
                             for i in range(start, min(start + step, ROWS + 1))))
    return path


def _job(settings, job_id: str) -> store.JobRecord:
    with store.connect(settings) as conn:
        rec = store.get_job(conn, job_id)
    assert rec is not None
    return rec


def _kill_child(worker) -> None:
    (pid,) = worker.child_pids()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: pid not in worker.child_pids() and len(worker.child_pids()) == 1, 20, what="child respawned")


def _assert_exactly_once(db) -> None:
    assert db.execute("SELECT count(*), count(DISTINCT id), min(id), max(id) FROM big").fetchone() == (
        ROWS, ROWS, 1, ROWS)


def test_resumable_import_killed_twice_resumes_from_its_checkpoint_and_loads_each_row_once(
        isettings, db, broker, start_worker, big_file):
    with start_worker(*WORKER_ARGS, **WORKER_ENV) as w, _pub(isettings) as pub:
        w.wait_consuming()
        rec = submit(isettings, big_file, "big", mode="resumable", options={"batch_bytes": 32 * 1024},
                     publisher=pub)
        marks = []
        for fraction in (0.2, 0.5):
            wait_for(lambda f=fraction: _job(isettings, rec.id).checkpoint_rows > f * ROWS, 60, 0.02,
                     what=f"checkpoint past {fraction:.0%}")
            _kill_child(w)
            marks.append(_job(isettings, rec.id).checkpoint_rows)
        final = wait_for(lambda: (lambda j: j if j.finished else None)(_job(isettings, rec.id)), 120,
                         what="job finished")
        wait_for(lambda: "table analyzed" in w.output(), 20, what="ANALYZE ran")
        output = w.output()
    assert (final.state, final.rows_imported, final.rows_rejected, final.attempts) == ("SUCCESS", ROWS, 0, 3)
    _assert_exactly_once(db)
    assert output.count('"resuming from checkpoint"') == 2
    resumed = [int(line.split('"rows": ')[1].split(",")[0].split("}")[0]) for line in output.splitlines()
               if '"resuming from checkpoint"' in line]
    assert resumed[0] >= marks[0] and resumed[1] >= marks[1]  # never started over


def test_atomic_import_killed_mid_copy_starts_over_and_loads_each_row_once(
        isettings, db, broker, start_worker, big_file):
    with start_worker(*WORKER_ARGS, **WORKER_ENV) as w, _pub(isettings) as pub:
        w.wait_consuming()
        rec = submit(isettings, big_file, "big", options={"batch_bytes": 256 * 1024}, publisher=pub)
        progress = Progress(isettings)
        wait_for(lambda: int((progress.read(rec.id) or {}).get("rows", 0)) > 0.1 * ROWS, 60, 0.02,
                 what="rows streaming")
        _kill_child(w)
        assert db.execute("SELECT count(*) FROM big").fetchone() == (0,)
        final = wait_for(lambda: (lambda j: j if j.finished else None)(_job(isettings, rec.id)), 120,
                         what="job finished")
    assert (final.state, final.rows_imported, final.attempts) == ("SUCCESS", ROWS, 2)
    _assert_exactly_once(db)


class _pub:
    def __init__(self, settings) -> None:
        self.publisher = Publisher(settings)

    def __enter__(self) -> Publisher:
        return self.publisher

    def __exit__(self, *exc: object) -> None:
        self.publisher.close()


def test_two_deliveries_of_one_job_at_once_load_it_once(isettings, db, broker, start_worker, big_file):
    with start_worker("-Q", "import_queue,bulk_ops_queue", "-c", "2", **WORKER_ENV) as w, _pub(isettings) as pub:
        w.wait_consuming(2)
        rec = submit(isettings, big_file, "big", options={"batch_bytes": 256 * 1024}, publisher=pub)
        broker.publish_job("import.csv", {"file": rec.file_path, "table": "big"}, job_id=rec.id)
        final = wait_for(lambda: (lambda j: j if j.finished else None)(_job(isettings, rec.id)), 120,
                         what="job finished")
        wait_for(lambda: "job already finished, nothing to do" in w.output(), 30, what="second delivery acked")
        output = w.output()
    assert (final.state, final.rows_imported, final.attempts) == ("SUCCESS", ROWS, 1)
    assert '"reason": "locked"' in output  # the second delivery waited for the first
    assert output.count('"import succeeded"') == 1
    _assert_exactly_once(db)
