"""One run of one import job: lock, job row, checks, batches, outcome.

The order of a run and the meaning of its outcomes are described in :mod:`importd.imports.handlers`
(the task entry points); this module is the run itself.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, TypeVar

import psycopg
from psycopg import pq

from importd.config import Settings
from importd.errors import Deferred, InvalidMessage, PermanentError, TransientError
from importd.imports import rejectfile, storage, store, targets
from importd.imports.copy import loader, pgerrors, scan, streams
from importd.imports.copy.batches import Batch
from importd.imports.copy.batches import batches as read_batches
from importd.imports.copy.spec import LoadOptions, Reject
from importd.imports.options import JobArgsError, job_from_args, normalize
from importd.imports.runtime import Runtime
from importd.imports.states import JobState
from importd.imports.store import JobRecord
from importd.worker.context import JobContext
from importd.worker.messages import Job

T = TypeVar("T")

#: Longest error text a run records (the outcome and the dead-letter headers cut theirs to the same).
MAX_ERROR_CHARS = 2000
#: Rejected rows counted past ``max_errors`` before a failing job stops reading.
COUNT_LIMIT = 10_000
#: An import that loads fewer rows queues no ANALYZE: autovacuum's own analyze threshold
#: covers small changes, and one ANALYZE job per 100-row file would double the job count.
ANALYZE_MIN_ROWS = 1000

#: Session settings of an import connection: a worker host that vanishes (power loss) must
#: not hold the job's advisory lock for the kernel's default two hours of TCP keepalive, and
#: a COPY stuck behind another session's lock fails (transient, retried) instead of waiting
#: forever.
SESSION_OPTIONS = "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3 " \
                  "-c lock_timeout=60000"
#: Client-side keepalives (a vanished database server is noticed too).
CLIENT_KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                                     "keepalives_count": 3}


def connect(settings: Settings) -> psycopg.Connection[Any]:
    """A new import connection (:data:`SESSION_OPTIONS`, :data:`CLIENT_KEEPALIVES`)."""
    return store.connect(settings, application_name="importd-worker", options=SESSION_OPTIONS,
                         **CLIENT_KEEPALIVES)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def lock_key(job_id: str) -> str:
    """Text hashed into the job's advisory lock key (``hashtextextended(key, 0)``)."""
    return f"importd.job:{job_id}"


#: The one statement that takes a job's lock (issue 11): a session advisory lock, so it goes
#: with the connection (a dead backend frees it) and a delivery holds it across its commits.
TRY_LOCK = "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))"


def try_lock(conn: psycopg.Connection[Any], job_id: str) -> bool:
    """Take the job's lock on ``conn`` if it is free; False if another session holds it
    (a live delivery of the job runs there). The lock goes when ``conn`` unlocks or closes."""
    row = conn.execute(TRY_LOCK, (lock_key(job_id),)).fetchone()
    return bool(row and row[0])


def publish_analyze(runtime: Runtime, job_id: str, table: str, log: Any) -> None:
    """Queue ANALYZE of ``table`` after a successful import (best effort: logged if it fails)."""
    try:
        runtime.publisher().publish(Job(job_id=f"{job_id}.analyze", task="bulk.operations",
                              args={"op": "analyze", "table": table}))
    except Exception as exc:  # noqa: BLE001 - the import is done; ANALYZE is an optimisation
        log.warning("could not queue ANALYZE", table=table, error=str(exc))



@dataclass(frozen=True)
class ImportOptions:
    max_errors: int
    validate_only: bool
    delimiter: str | None
    mapping: dict[str, str | None]
    load: LoadOptions

    def dialect(self, header: scan.Header) -> LoadOptions:
        """The load options with the file's delimiter and line end, as its header shows them."""
        return replace(self.load, delimiter=header.delimiter, eol=header.eol)


def options_of(rec: JobRecord, settings: Settings) -> ImportOptions:
    """The import options of a job row, with settings as defaults."""
    opts = normalize(rec.options)
    load = LoadOptions(
        delimiter=opts.get("delimiter") or ",",
        encoding=scan.encoding(opts.get("encoding")),
        batch_bytes=opts.get("batch_bytes", settings.import_batch_bytes),
        max_line_bytes=opts.get("max_line_bytes", settings.max_line_bytes),
        max_field_bytes=min(opts.get("max_field_bytes", settings.max_field_bytes),
                            opts.get("max_line_bytes", settings.max_line_bytes)),
        on_conflict=opts.get("on_conflict", "error"),
        conflict_key=tuple(opts.get("conflict_key") or ()),
    )
    return ImportOptions(max_errors=opts["max_errors"], validate_only=opts["validate_only"],
                         delimiter=opts.get("delimiter"), mapping=dict(opts.get("columns") or {}), load=load)


class LoadEnd(StrEnum):
    """How the loading of a file ended (what :meth:`ImportRun._conclude` makes an outcome of)."""

    DONE = "done"  # every batch read
    CANCELLED = "cancelled"  # a cancel request seen between batches
    TOO_MANY_ERRORS = "too-many-errors"  # more rejected rows than max_errors


class RecordedFailure(PermanentError):
    """The run ended the job FAILURE and committed it (or found it ended by another delivery):
    the outcome is durable, the delivery may be acked. Any other PermanentError leaving a run
    (a store that lost the file mid-read, say) has no durable outcome yet: the handler records
    one before the ack (issue 12 item 1)."""


class Refused(Exception):
    """A fault of the file or the table found by the run (a bad path, header, option, too many
    bad rows): :meth:`ImportRun.run` records it as the job's FAILURE and raises
    :class:`~importd.errors.PermanentError`. Whoever raises it has rolled back what must not stay."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ImportRun:
    """One delivery of one import job on one connection (autocommit until loading starts)."""

    def __init__(self, ctx: JobContext, conn: psycopg.Connection[Any], kept: bool = False) -> None:
        self.ctx, self.conn, self.settings = ctx, conn, ctx.settings
        self.kept = kept  # conn was kept from an earlier job and not probed since
        self.job_id = ctx.job.job_id
        self.log = ctx.log
        self.runtime = Runtime.of(ctx)
        self.progress = self.runtime.progress
        self.rows = self.rejected = self.stored = 0
        self.pending_rejects: list[Reject] = []
        self.first_reject: Reject | None = None
        self.reject_log: rejectfile.RejectLog | None = None  # every rejected record, as CSV lines
        self.opts: ImportOptions
        self.size = 0
        self.committing = False
        self.resumable = False  # set by _load: a batch past max_errors is then rolled back once counted
        self.checkpoint = 0  # the checkpoint offset this run last committed (or found)
        self.header_bytes = 0  # the header record's length (stored with every checkpoint)
        self.reopened = False  # this delivery reopened the job for a replayed dead letter

    def run(self) -> None:
        started = self._lock_and_start()
        if started is None:  # finished, cancelled, or no row yet
            rec = store.get_job(self.conn, self.job_id) or self._create_from_args()
            if rec.finished:
                self.log.info("job already finished, nothing to do", state=rec.state)
                return
            if rec.cancel_requested:
                self._finish(rec, JobState.CANCELLED, "cancelled before it started")
                return
            started = store.start_job(self.conn, self.job_id, self.ctx.job.attempt, worker_name())
            if started is None:
                return
        rec = started
        write = self.progress.restart if self.reopened else self.progress.set_state
        write(self.job_id, JobState.STARTED, attempt=self.ctx.job.attempt, table=rec.target_table,
              total_bytes=rec.file_size)
        try:
            self._import(started)
        except Refused as exc:
            self._finish(started, JobState.FAILURE, exc.reason)
            raise RecordedFailure(exc.reason[:MAX_ERROR_CHARS]) from exc
        finally:
            self.progress.forget(self.job_id)
            if self.reject_log is not None:
                self.reject_log.close()

    def _lock_and_start(self) -> JobRecord | None:
        """Take the job's lock (Deferred if another delivery holds it) and mark it STARTED; the
        started row, None if it was not started. Both in one statement, unless the delivery
        replays a dead letter (which reopens the job in between)."""
        if not self.ctx.job.replay:
            locked, started = self.first_statement(lambda: store.lock_and_start(
                self.conn, TRY_LOCK, lock_key(self.job_id), self.job_id, self.ctx.job.attempt, worker_name()))
            if not locked:
                raise Deferred("locked")
            return started
        if not self.first_statement(lambda: try_lock(self.conn, self.job_id)):
            raise Deferred("locked")
        if store.reopen_for_replay(self.conn, self.job_id, self.ctx.job.replay):
            self.log.info("job reopened for a replayed dead letter", replay=self.ctx.job.replay)
            self.reopened = True  # its Redis record (a final state, a final event) starts over
        return store.start_job(self.conn, self.job_id, self.ctx.job.attempt, worker_name())

    def first_statement(self, statement: Callable[[], T]) -> T:
        """Run the run's first statement; if it finds a kept connection broken (the server
        closed it while it was idle), run it once more on a new connection. Nothing ran on
        the broken one that a new start cannot repeat: its lock went with its backend, and a
        start it may have committed is the same start again."""
        try:
            return statement()
        except psycopg.OperationalError:
            if not (self.kept and self.conn.broken):
                raise
            self.log.info("kept connection was closed by the server; reconnecting")
            self.conn.close()
            self.conn, self.kept = connect(self.settings), False
            return statement()

    def _create_from_args(self) -> JobRecord:
        """The job row of a message published without one (its arguments checked by
        :func:`job_from_args`). Arguments the row cannot hold are the message's defect:
        dead-lettered as ``bad-args``, never acked as an outcome of a job that has no row
        (issue 12 item 2: such a message was lost) nor retried as a server fault."""
        try:
            rec = job_from_args(self.ctx.job)
        except JobArgsError as exc:
            raise InvalidMessage("bad-args", f"job {self.job_id} has no record and invalid arguments: {exc}") from exc
        try:
            return store.create_job(self.conn, rec)
        except psycopg.errors.UniqueViolation:
            found = store.get_job(self.conn, self.job_id)
            assert found is not None
            return found
        except psycopg.Error as exc:
            if pgerrors.is_transient(exc):
                raise
            raise InvalidMessage("bad-args", f"job {self.job_id}: its arguments cannot be stored: "
                                             f"{type(exc).__name__}: {exc}"[:500]) from exc
        except (ValueError, UnicodeError) as exc:  # a value no PostgreSQL type takes, refused client-side
            raise InvalidMessage("bad-args", f"job {self.job_id}: its arguments cannot be stored: "
                                             f"{type(exc).__name__}: {exc}"[:500]) from exc

    def _finish(self, rec: JobRecord, state: str, error: str | None) -> None:
        """Write the final state (pending rejected rows, the reject file) in the current
        transaction; commit. ``error`` is cut to :data:`MAX_ERROR_CHARS` (it goes to the job
        row, Redis and every event stream)."""
        error = error[:MAX_ERROR_CHARS] if error else error
        self._store_rejects()
        # the reject file is published before the commit that names it
        rejects = self.reject_log.publish(self.conn, final=state != JobState.FAILURE) \
            if self.reject_log is not None else None
        done, previous = store.finish_job(self.conn, self.job_id, state, error, self.rows, self.rejected, rejects)
        if not self.conn.autocommit:
            if not done:  # someone else ended the job meanwhile: keep their outcome, not our rows
                self.conn.rollback()
                if self.reject_log is not None:
                    self.reject_log.discard(self.log)
                raise RecordedFailure(f"job {self.job_id} was ended elsewhere; this run rolled back")
            self.runtime.commit_and_release(self.conn)  # the lock goes only once the outcome is durable
        if self.reject_log is not None:
            self.reject_log.committed_final(self.log, previous)
        self.progress.set_state(self.job_id, state, rows=self.rows, rejected=self.rejected,
                                error=error or "", table=rec.target_table)

    def _store_rejects(self, conn: psycopg.Connection[Any] | None = None) -> None:
        room = store.MAX_STORED_REJECTS - self.stored
        keep = self.pending_rejects[:max(0, room)]
        store.add_rejected_rows(conn or self.conn, self.job_id, keep)
        self.stored += len(keep)
        self.pending_rejects = []

    def _open(self, rec: JobRecord) -> tuple[storage.Source, ImportOptions, targets.Target]:
        try:
            opts = options_of(rec, self.settings)
        except JobArgsError as exc:
            raise Refused(f"invalid options: {exc}") from exc
        try:  # a key in the upload store (or an old job's path inside the upload directory)
            source = storage.job_source(self.settings, rec.file_path)
        except (storage.BadKey, storage.ObjectNotFound) as exc:
            raise Refused(str(exc)) from exc
        if rec.file_size is not None and rec.checkpoint_offset and source.size != rec.file_size:
            raise Refused("the file changed since the job was created; cannot resume")
        try:
            target = targets.load(self.conn, self.settings, rec.target_table or "")
        except targets.TargetError as exc:
            raise Refused(str(exc)) from exc
        return source, opts, target

    def _import(self, rec: JobRecord) -> None:
        source, opts, target = self._open(rec)
        resumable = rec.mode == "resumable" and not opts.validate_only
        ranged = resumable and _resumes_ranged(rec)
        # A resumed run reads the header alone (a bounded ranged read), then the file from the
        # checkpoint: the committed part is never read again (issue 14).
        head = source.read_range(0, rec.header_bytes or 0) if ranged else b""
        with source.open(rec.checkpoint_offset if ranged else 0) as f:
            header = _header(io.BytesIO(head) if ranged else f, opts)
            if ranged and header.data_offset != len(head):  # not seen: the file was checked unchanged
                self.log.warning("the header differs from the checkpoint's; counting lines instead",
                                 header_bytes=rec.header_bytes, found=header.data_offset)
                ranged = False
                f.seek(0)
                header = _header(f, opts)
            try:
                columns = targets.map_header(target, header.fields, opts.mapping)
            except targets.TargetError as exc:
                raise Refused(str(exc)) from exc
            load_opts = opts.dialect(header)
            engine = loader.Loader(self.conn, target, columns, load_opts)
            try:
                engine.prepare()
            except psycopg.errors.DataError as exc:
                raise Refused(str(exc)) from exc
            offset, line = header.data_offset, 1 + header.lines
            self.header_bytes = header.data_offset
            self.checkpoint = rec.checkpoint_offset  # as read under the lock: the fence's first value
            if resumable and rec.checkpoint_offset > offset:
                offset = rec.checkpoint_offset
                line = rec.checkpoint_line if ranged and rec.checkpoint_line else \
                    1 + _count_lines(f, rec.checkpoint_offset, load_opts.brk)  # checkpointed before issue 14
                self.rows, self.rejected = rec.checkpoint_rows, rec.checkpoint_rejected
                self.log.info("resuming from checkpoint", offset=offset, line=line, rows=self.rows, ranged=ranged)
            if resumable:
                self.stored = _keep_rejects_before(self.conn, self.job_id, line)
            elif rec.attempts > 1 or rec.checkpoint_offset:
                store.delete_rejected_rows(self.conn, self.job_id)
            self.reject_log = rejectfile.RejectLog.open(
                self.conn, self.job_id, source.store, head if ranged else _head(f, header.data_offset),
                resume_from=offset if resumable and offset > header.data_offset else None,
                run=f"a{self.ctx.job.attempt}-{uuid.uuid4().hex[:12]}", eol=header.eol)
            self.conn.autocommit = False
            try:
                outcome = self._load(rec, f, engine, offset, line, opts, resumable)
            except scan.CsvFormatError as exc:
                self._roll_back(resumable)
                raise Refused(str(exc)) from exc
        self._conclude(rec, target, outcome, opts, resumable)

    def _load(self, rec: JobRecord, f: Any, engine: loader.Loader, offset: int, line: int,
              opts: ImportOptions, resumable: bool) -> LoadEnd:
        """Load every batch; how the loading ended."""
        self.opts, self.size, self.committing = opts, rec.file_size or f.seek(0, os.SEEK_END), resumable
        self.resumable = resumable
        batches = read_batches(f, offset, line, engine.opts)
        with contextlib.closing(batches):  # stops the read-ahead thread before the file closes
            count = self._streams(engine, offset) if resumable else 1
            reason = self._load_serial(batches, engine) if count == 1 else self._load_parallel(batches, engine, count)
        if reason is not None:
            return LoadEnd(reason)
        return LoadEnd.TOO_MANY_ERRORS if self.rejected > opts.max_errors else LoadEnd.DONE

    def _streams(self, engine: loader.Loader, offset: int) -> int:
        """COPY streams for a resumable import: one unless the rest of the file is more than a batch
        (:mod:`importd.imports.copy.streams`). ``on_conflict`` skip/update run on as many: a key in
        two batches makes the later one wait for the earlier's commit (or roll back and let it pass,
        see the streams), so the outcome is one stream's."""
        if self.size - offset <= engine.opts.batch_bytes:
            return 1
        return max(1, self.settings.import_streams)

    def _load_serial(self, batches: Any, engine: loader.Loader) -> str | None:
        for index, batch in enumerate(batches):
            reason = self.before(self.conn, index)
            if reason is not None:
                return reason
            fresh = self.conn.info.transaction_status == pq.TransactionStatus.IDLE  # after a commit
            if not self.settle(self.conn, batch, engine.load(batch, fresh=fresh)):
                break
        return None

    def _load_parallel(self, batches: Any, engine: loader.Loader, count: int) -> str | None:
        """The other streams' connections are extra: if the server refuses them (max_connections
        reached, say), the import goes on with the streams it has, down to one."""
        conns: list[psycopg.Connection[Any]] = []
        try:
            for _ in range(count - 1):
                try:
                    conns.append(connect(self.settings))
                except psycopg.OperationalError as exc:
                    self.log.warning("no connection for another COPY stream; going on with fewer",
                                     streams=len(conns) + 1, error=str(exc).strip()[:300])
                    break
                conns[-1].autocommit = False
            if not conns:
                return self._load_serial(batches, engine)
            engines = [engine] + [loader.Loader(c, engine.target, engine.columns, engine.opts) for c in conns]
            for extra in engines[1:]:
                extra.prepare()  # its own staging table (on_conflict skip/update)
            self.log.info("loading in parallel streams", streams=len(engines))
            return streams.Streams(engines, batches, self, self.log).run()
        finally:
            for conn in conns:
                conn.close()

    def before(self, conn: psycopg.Connection[Any], index: int) -> str | None:
        """Stop before batch ``index``: raise at the soft limit or on a stop request; "cancelled"."""
        self.ctx.check()
        if index and self._cancel_requested(conn):  # checked at the start for the first batch
            return LoadEnd.CANCELLED
        return None

    def settle(self, conn: psycopg.Connection[Any], batch: Batch, result: loader.BatchResult) -> bool:
        """Count a loaded batch (in file order) and commit it with the checkpoint while the job
        may still succeed; False once enough rejected rows are counted to stop reading.

        The checkpoint moves by compare-and-set from the offset this run last committed
        (issue 12 item 4): if it moved meanwhile, another delivery holds the job now (this
        run's lock went with its main backend) and the batch is rolled back, not loaded twice.

        Once a resumable run has passed ``max_errors`` (a FAILURE), the batch that passed it and
        every later one are counted and rolled back at once: each is judged alone against the
        committed prefix, so a key in two of them is no duplicate, and the report is the same
        with one stream (which would otherwise keep them in one transaction) as with several.
        """
        self.rows += result.rows
        self.rejected += len(result.rejects)
        self.pending_rejects.extend(result.rejects)
        if self.reject_log is not None:
            self.reject_log.add(batch, result.rejects, result.raws)
        if result.rejects and self.first_reject is None:
            self.first_reject = result.rejects[0]
        if self.committing and self.rejected > self.opts.max_errors:
            self.committing = False  # this batch and the rest are only counted, never committed
        if self.committing:
            self._store_rejects(conn)
            if not store.advance_checkpoint(conn, self.job_id, previous=self.checkpoint, offset=batch.end,
                                            rows=self.rows, rejected=self.rejected, line=batch.next_line,
                                            header_bytes=self.header_bytes):
                conn.rollback()
                raise TransientError(f"the checkpoint of job {self.job_id} is no longer at {self.checkpoint}: "
                                     "another delivery took the job over (this run's lock was lost); "
                                     "batch rolled back")
            if self.reject_log is not None:  # after the fence: a run that lost its lock commits none
                self.reject_log.checkpoint(conn, batch.end)
            conn.commit()
            self.checkpoint = batch.end
        else:
            if self.resumable:  # counted alone against the committed prefix, on any number of streams
                conn.rollback()
            if self.reject_log is not None:
                self.reject_log.spill()
            if self.pending_rejects and len(self.pending_rejects) > store.MAX_STORED_REJECTS:
                del self.pending_rejects[store.MAX_STORED_REJECTS:]
        self.progress.update(self.job_id, rows=self.rows, bytes=batch.end, total_bytes=self.size,
                             rejected=self.rejected)
        self.ctx.progress(rows=self.rows, bytes=batch.end, total_bytes=self.size, rejected=self.rejected)
        return self.rejected <= self.opts.max_errors + COUNT_LIMIT

    def _roll_back(self, resumable: bool) -> None:
        """Drop the uncommitted part; ``rows`` becomes what stays in the table."""
        self.conn.rollback()
        if resumable:
            found = store.get_job(self.conn, self.job_id)
            self.rows = found.checkpoint_rows if found else 0
        else:
            self.rows = 0

    def _cancel_requested(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute("SELECT cancel_requested FROM importd.jobs WHERE id = %s", (self.job_id,)).fetchone()
        return bool(row and row[0])

    def _conclude(self, rec: JobRecord, target: targets.Target, outcome: LoadEnd, opts: ImportOptions,
                  resumable: bool) -> None:
        if outcome is LoadEnd.DONE and not opts.validate_only:
            self._finish(rec, JobState.SUCCESS, _summary(self.rejected, self.first_reject, opts.max_errors)
                         if self.rejected else None)
            self.log.info("import succeeded", rows=self.rows, rejected=self.rejected, table=target.name)
            if self.rows >= ANALYZE_MIN_ROWS:
                publish_analyze(self.runtime, self.job_id, target.name, self.log)
            return
        counted_rows = self.rows
        self._roll_back(resumable)
        if outcome is LoadEnd.CANCELLED:
            self._finish(rec, JobState.CANCELLED, "cancelled on request")
            self.log.info("import cancelled", rows=self.rows)
            return
        if outcome is LoadEnd.DONE:  # validate_only, valid enough
            self.rows = counted_rows
            self._finish(rec, JobState.SUCCESS, _summary(self.rejected, self.first_reject, opts.max_errors)
                         if self.rejected else None)
            return
        if opts.validate_only:
            self.rows = counted_rows
        reason = _summary(self.rejected, self.first_reject, opts.max_errors, stopped=self.rejected
                          > opts.max_errors + COUNT_LIMIT)
        raise Refused(reason)


def _summary(rejected: int, first: Reject | None, max_errors: int, stopped: bool = False) -> str:
    count = f"more than {rejected - 1}" if stopped else str(rejected)
    text = f"{count} row(s) rejected (max_errors {max_errors})"
    if first is not None:
        line, column, _value, reason = first
        text += f"; first: line {line}" + (f", column {column}" if column else "") + f": {reason}"
    return text


def _header(f: Any, opts: ImportOptions) -> scan.Header:
    try:
        return scan.read_header(f, opts.load.encoding, opts.delimiter, opts.load.max_line_bytes)
    except scan.CsvFormatError as exc:
        raise Refused(str(exc)) from exc


def _resumes_ranged(rec: JobRecord) -> bool:
    """Whether the job's checkpoint carries what a ranged resume needs: the line number at the
    offset and the header's length (rows checkpointed before issue 14 have neither)."""
    return bool(rec.checkpoint_offset and rec.checkpoint_line and rec.header_bytes
                and 0 < rec.header_bytes <= rec.checkpoint_offset)


def _head(f: Any, end: int) -> bytes:
    """The file's first ``end`` bytes (its header record), for the reject file."""
    f.seek(0)
    return bytes(f.read(end))


def _count_lines(f: Any, end: int, brk: bytes = b"\n") -> int:
    """Line ends (``brk``) in the file before byte ``end`` (streamed in 8 MiB pieces)."""
    f.seek(0)
    total, left = 0, end
    while left > 0:
        chunk = f.read(min(left, 8 * 1024 * 1024))
        if not chunk:
            break
        total += chunk.count(brk)
        left -= len(chunk)
    return total


def _keep_rejects_before(conn: psycopg.Connection[Any], job_id: str, line: int) -> int:
    """Drop the rejected rows stored from ``line`` on (an earlier run that ended FAILURE stores
    the rows it counted past its checkpoint; this run counts them again); return how many stay."""
    conn.execute("DELETE FROM importd.rejected_rows WHERE job_id = %s AND line_number >= %s", (job_id, line))
    row = conn.execute("SELECT count(*) FROM importd.rejected_rows WHERE job_id = %s", (job_id,)).fetchone()
    return int(row[0]) if row else 0
