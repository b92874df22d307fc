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


class Runtime:
    """The engine's resources in one process; reached with :meth:`of` from a job's context."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._connection: psycopg.Connection[Any] | None = None
        self._publisher: Publisher | None = None
        self._progress: Progress | None = None

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

    def take_connection(self, connect: Any) -> psycopg.Connection[Any]:
        """The idle import connection if there is one and it still answers, else ``connect()``."""
        conn, self._connection = self._connection, None
        if conn is not None and not conn.closed and conn.info.transaction_status == pq.TransactionStatus.IDLE:
            try:
                conn.execute("SELECT 1")  # the server may have closed it meanwhile (restart, idle timeout)
                return conn
            except psycopg.Error:
                pass
        if conn is not None:
            conn.close()
        return connect()  # type: ignore[no-any-return]

    def give_back(self, conn: psycopg.Connection[Any]) -> None:
        """Keep a cleanly finished job's connection for the next job: its advisory lock released,
        its temporary tables dropped; anything unexpected closes it instead."""
        try:
            if conn.info.transaction_status != pq.TransactionStatus.IDLE:
                conn.rollback()
            conn.autocommit = True
            conn.execute("SELECT pg_advisory_unlock_all(); DISCARD TEMP")
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
