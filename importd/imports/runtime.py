"""What the import engine keeps in a worker process between jobs (issue 11).

A worker child runs one job after another. Some things are worth keeping from one job to
the next: the idle import connection (a backend fork saved per job: small files are mostly
overhead), the publisher that queues ANALYZE, and the progress writer (whose Redis back-off
state must be shared, or every job pays the timeout while Redis is down). They used to sit
in module-level dicts; now they live in one :class:`Runtime` per process, kept in the
job context's ``resources`` slot, which the worker core hands unchanged to every job of its
process and never looks into.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import pq

from importd.config import Settings
from importd.imports.progress import Progress
from importd.worker.context import JobContext

if TYPE_CHECKING:
    from importd.worker.publisher import Publisher

#: The key of the engine's Runtime in ``JobContext.resources``.
KEY = "importd.imports.runtime"
#: What a job leaves on its session and the next job must not find: its advisory lock, its
#: temporary tables (the upsert's staging table).
RELEASE = "SELECT pg_advisory_unlock_all(); DISCARD TEMP"


class Runtime:
    """The engine's resources in one process; reached with :meth:`of` from a job's context."""

    def __init__(self, settings: Settings, progress: Progress | None = None) -> None:
        self.settings = settings
        self._connection: psycopg.Connection[Any] | None = None
        self._publisher: Publisher | None = None
        self._progress = progress  # made on first use unless given
        self._released: psycopg.Connection[Any] | None = None  # committed and released, see commit_and_release

    @classmethod
    def of(cls, ctx: JobContext) -> Runtime:
        """The Runtime of the process running ``ctx`` (made on first use)."""
        runtime = ctx.resources.get(KEY)
        if not isinstance(runtime, Runtime):
            runtime = ctx.resources[KEY] = cls(ctx.settings)
        return runtime

    @property
    def progress(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(self.settings)
        return self._progress

    def publisher(self) -> Publisher:
        """The process's publisher (for follow-up jobs such as ANALYZE)."""
        from importd.worker.publisher import Publisher

        if self._publisher is None:
            self._publisher = Publisher(self.settings)
        return self._publisher

    def take_connection(self, connect: Any) -> tuple[psycopg.Connection[Any], bool]:
        """The idle import connection if there is one, else ``connect()``; and whether it was kept.

        A kept connection is not probed (a ``SELECT 1`` was one round trip of the ten of a
        small job): the server may have closed it meanwhile (restart, idle timeout,
        terminated), so the run's first statement on it goes again on a new connection if it
        finds it broken (:meth:`importd.imports.run.ImportRun.first_statement`)."""
        conn, self._connection, self._released = self._connection, None, None
        if conn is not None and not conn.closed and conn.info.transaction_status == pq.TransactionStatus.IDLE:
            return conn, True
        if conn is not None:
            conn.close()
        return connect(), False

    def commit_and_release(self, conn: psycopg.Connection[Any]) -> None:
        """Commit ``conn``'s transaction, then :data:`RELEASE` its session, in one round trip.

        The statements after ``COMMIT`` in one query string run only if the commit succeeded,
        so the job's lock is never let go before its outcome is durable; :meth:`give_back`
        then has nothing left to release (one round trip less per job)."""
        conn.execute("COMMIT; " + RELEASE)
        self._released = conn

    def give_back(self, conn: psycopg.Connection[Any]) -> None:
        """Keep a cleanly finished job's connection for the next job: its advisory lock released,
        its temporary tables dropped; anything unexpected closes it instead."""
        released, self._released = self._released is conn, None
        try:
            if conn.info.transaction_status != pq.TransactionStatus.IDLE:
                conn.rollback()
                released = False
            conn.autocommit = True
            if not released:
                conn.execute(RELEASE)
        except psycopg.Error:
            conn.close()
            return
        if self._connection is not None:
            self._connection.close()
        self._connection = conn

    @property
    def idle_connection(self) -> psycopg.Connection[Any] | None:
        """The connection kept for the next job, if any."""
        return self._connection
