"""Parallel COPY streams for one resumable import: batches load at once and commit in order.

Each stream loads the next batch in its own transaction and settles it on its turn, so the
committed part of the file is always one prefix (checkpoint, resume and ``max_errors`` mean
what they mean with one stream). Lock waits between streams, and the checkpoint fence that
stops a run that lost its lock: docs/importing.md, "Speed".
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Protocol

import psycopg
from psycopg import pq

from importd.errors import TransientError
from importd.imports.copy.batches import Batch
from importd.imports.copy.loader import BatchResult, Loader

#: Seconds between checks, while a stream waits for its turn, that it is not blocking an
#: earlier batch (see the module docstring).
BLOCK_CHECK_S = 0.25


class Steps(Protocol):
    """What the import run does around each batch (:class:`importd.imports.run.ImportRun`)."""

    def before(self, conn: psycopg.Connection[Any], index: int) -> str | None:
        """Raise or return a reason ("cancelled") to stop before loading batch ``index``."""

    def settle(self, conn: psycopg.Connection[Any], batch: Batch, result: BatchResult) -> bool:
        """Account a loaded batch in file order, committing it or not; False: read no more."""


class _Stopped(Exception):
    """Another stream stopped the load (an error, or the end decided)."""


class Streams:
    """Loads ``batches`` with one :class:`~importd.imports.copy.loader.Loader` per connection.

    :param engines: one loader per stream, each on its own connection; the first runs in
        the calling thread (its connection holds the job's lock), the others in threads.
    :param batches: the shared reader (called under a lock).
    :param steps: the run's per-batch steps; ``settle`` is only ever called by one stream at
        a time, in batch order.
    :param log: the job's logger.
    """

    def __init__(self, engines: list[Loader], batches: Iterator[Batch], steps: Steps, log: Any) -> None:
        self.engines, self.batches, self.steps, self.log = engines, batches, steps, log
        self.turn = threading.Condition()
        self.taken = 0  # batches handed out
        self.settled = 0  # batches settled (the next to settle has this index)
        self.loading: dict[int, int] = {}  # index of a batch being loaded -> its backend pid
        self.stopped = False
        self.enough = False  # settle asked to read no more
        self.outcome: str | None = None
        self.error: BaseException | None = None

    def run(self) -> str | None:
        """Load every batch; the reason the load stopped early ("cancelled"), else None."""
        threads = [threading.Thread(target=self._guarded, args=(engine,), name=f"importd-copy-{n}", daemon=True)
                   for n, engine in enumerate(self.engines[1:], start=1)]
        for thread in threads:
            thread.start()
        try:
            self._guarded(self.engines[0])
            for thread in threads:
                thread.join()
        finally:  # an exception raised in this thread (the soft limit) stops the others
            self._stop()
            for thread in threads:
                thread.join()
        if self.error is not None:
            raise self.error
        if self.outcome is None and not self.enough and self.settled != self.taken:
            raise TransientError(f"{self.taken - self.settled} batch(es) loaded but not settled; "
                                 "resuming from the checkpoint")
        return self.outcome

    def _guarded(self, engine: Loader) -> None:
        try:
            self._stream(engine)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to run(), re-raised in the job thread
            with self.turn:
                self.error = self.error or exc
            self._stop()
        finally:
            _roll_back(engine.conn)

    def _stream(self, engine: Loader) -> None:
        conn = engine.conn
        while True:
            index, batch = self._take(conn)
            if batch is None:
                return
            reason = self.steps.before(conn, index)
            if reason is not None:
                with self.turn:
                    self.outcome = self.outcome or reason
                self._stop()
                return
            result = engine.load(batch, fresh=True)
            if self._wait_turn(conn, index):  # rolled back while waiting: load it again, alone
                result = engine.load(batch, fresh=True)
            try:
                more = self.steps.settle(conn, batch, result)  # commits it, or counts it and rolls back
            except BaseException:
                self._stop()  # before the turn passes: no later batch may commit past this one
                raise
            with self.turn:
                self.loading.pop(index, None)
                self.settled += 1
                if not more:
                    self.enough = self.stopped = True
                self.turn.notify_all()
            if not more:
                return

    def _take(self, conn: psycopg.Connection[Any]) -> tuple[int, Batch | None]:
        with self.turn:
            if self.stopped:
                raise _Stopped
            batch = next(self.batches, None)
            if batch is None:
                return self.taken, None
            index, self.taken = self.taken, self.taken + 1
            self.loading[index] = conn.info.backend_pid
            return index, batch

    def _wait_turn(self, conn: psycopg.Connection[Any], index: int) -> bool:
        """Wait until batch ``index`` may settle; True if it was rolled back meanwhile."""
        rolled_back = False
        while True:
            with self.turn:
                if self.stopped:
                    raise _Stopped
                if self.settled == index:
                    return rolled_back
                if self.turn.wait(BLOCK_CHECK_S) or rolled_back:
                    continue
                earlier = [pid for i, pid in self.loading.items() if i < index]
            if earlier and _blocks_any(conn, earlier):
                conn.rollback()
                rolled_back = True
                self.log.info("batch rolled back to let an earlier one pass its lock", batch=index)

    def _stop(self) -> None:
        with self.turn:
            self.stopped = True
            self.turn.notify_all()


def _blocks_any(conn: psycopg.Connection[Any], pids: list[int]) -> bool:
    """Whether this session holds a lock one of the backends ``pids`` waits for."""
    row = conn.execute("SELECT bool_or(pg_backend_pid() = ANY(pg_blocking_pids(p))) FROM unnest(%s::int[]) p",
                       (pids,)).fetchone()
    return bool(row and row[0])


def _roll_back(conn: psycopg.Connection[Any]) -> None:
    if not conn.closed and conn.info.transaction_status != pq.TransactionStatus.IDLE:
        try:
            conn.rollback()
        except psycopg.Error:
            pass
