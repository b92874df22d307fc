"""A gate that stops a resumable run's second stream inside its checkpoint commit, and
in-process deliveries: how the lost-lock tests (tests/faults/test_lost_lock.py,
tests/integration/test_rejectfile.py) put two runs of one job side by side.

The gate is a statement trigger on ``importd.jobs``: an UPDATE by a session that holds no
advisory lock (a COPY stream other than the one holding the job's lock, at its checkpoint)
waits while the test holds the gate's key. A statement trigger runs before the UPDATE locks
the job's row, so another delivery's start (an UPDATE of that row too) does not wait for the
gated commit.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from importd.imports.handlers import run_import_task
from tests.support.importing import context


@contextmanager
def checkpoint_gate(db: psycopg.Connection[Any], key: int, name: str) -> Iterator[None]:
    """Install the gate (function and trigger ``name``) for advisory key ``key``; removed after,
    with every advisory lock ``db`` holds."""
    db.execute(f"""
        CREATE FUNCTION importd.{name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) THEN
                PERFORM pg_advisory_xact_lock_shared({int(key)});  -- a second stream's commit waits
            END IF;
            RETURN NULL;
        END $$""")
    db.execute(f"CREATE TRIGGER {name} BEFORE UPDATE ON importd.jobs"
               f" FOR EACH STATEMENT EXECUTE FUNCTION importd.{name}()")
    try:
        yield
    finally:
        db.execute("SELECT pg_advisory_unlock_all()")
        db.execute(f"DROP TRIGGER IF EXISTS {name} ON importd.jobs")
        db.execute(f"DROP FUNCTION IF EXISTS importd.{name}()")


def waiting_on_gate(db: psycopg.Connection[Any], key: int) -> list[int]:
    """Backends of this database waiting at the gate (active, the gate's lock not granted)."""
    return [r[0] for r in db.execute(
        "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory'"
        " AND l.objid = %s AND NOT l.granted AND a.state = 'active' AND a.datname = current_database()",
        (key,))]


def lock_holders(db: psycopg.Connection[Any], key: int) -> list[int]:
    """Backends of the import holding a session advisory lock other than the gate (the job's lock)."""
    return [r[0] for r in db.execute(
        "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory'"
        " AND l.granted AND l.objid <> %s AND a.application_name = 'importd-worker'"
        " AND a.datname = current_database()", (key,))]


class Delivery(threading.Thread):
    """One delivery of the job, run in-process in its own thread; keeps what it raised."""

    def __init__(self, settings: Any, job_id: str, args: dict[str, Any], attempt: int) -> None:
        super().__init__(daemon=True)
        self.ctx = context(settings, job_id, args, attempt)
        self.raised: BaseException | None = None

    def run(self) -> None:
        try:
            run_import_task(self.ctx)
        except BaseException as exc:  # noqa: BLE001 - kept for the test
            self.raised = exc
