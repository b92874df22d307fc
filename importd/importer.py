"""The ``import.csv`` and ``bulk.operations`` task handlers: one import job, exactly once.

A run, in order: take a session advisory lock on the job id (busy: another delivery runs it
-> :class:`~importd.errors.Deferred`); read the job row (missing: create it from the message
if the arguments are valid); a job already final is a no-op; mark it STARTED; check the file
(inside the upload directory), the table (allowlist, catalog) and the header; then load the
file with :mod:`importd.loader`.

- ``atomic`` (default): every batch in one transaction, committed together with the job's
  SUCCESS; any crash rolls everything back and a redelivery starts over.
- ``resumable``: each batch commits together with the job's checkpoint (byte offset, rows,
  rejected rows); a redelivery resumes after the checkpoint. A resumable job that ends in
  FAILURE (too many bad rows) or CANCELLED keeps the batches it committed.
- ``validate_only``: the same path in a transaction that is always rolled back.

``max_errors`` (default 0) decides the outcome: more rejected rows than that is FAILURE
with the error report (rows are still counted to the end of the file, up to
:data:`COUNT_LIMIT` past ``max_errors``). Library errors are translated at the boundary:
connection loss, deadlocks, serialization failures, admin shutdown, cancels and lock
timeouts are :class:`~importd.errors.TransientError` (retried); what cannot pass is recorded
as FAILURE and raised as :class:`~importd.errors.PermanentError` (acked).
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from importd import csvscan, loader, store, targets
from importd.batches import batches as read_batches
from importd.config import Settings
from importd.errors import Deferred, InvalidMessage, PermanentError, TransientError
from importd.importopts import ImportOptions, JobArgsError, job_from_args, options_of
from importd.jobs import JobContext
from importd.messages import Job
from importd.progress import Progress
from importd.store import NOW, JobRecord, Reject

#: Rejected rows counted past ``max_errors`` before a failing job stops reading.
COUNT_LIMIT = 10_000
#: SQLSTATE classes that can pass: connection (08), rollback (40: deadlock, serialization),
#: resources (53), operator intervention (57: cancel, admin shutdown), system (58).
TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")
TRANSIENT_CODES = ("55P03",)  # lock_not_available

_progress: dict[tuple[str, str], Progress] = {}
_publishers: dict[str, Any] = {}


def progress_for(settings: Settings) -> Progress:
    """One Progress per process and Redis (keeps its back-off state between jobs)."""
    key = (settings.redis_url, settings.redis_prefix)
    if key not in _progress:
        _progress[key] = Progress(settings)
    return _progress[key]


def translate(exc: psycopg.Error) -> TransientError | PermanentError:
    state = exc.sqlstate or ""
    text = f"{type(exc).__name__}: {str(exc).strip()}"[:2000]
    if (isinstance(exc, psycopg.OperationalError) and not state) or state[:2] in TRANSIENT_CLASSES \
            or state in TRANSIENT_CODES:
        return TransientError(text)
    return PermanentError(text)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# -- task entry points --------------------------------------------------------------------

def run_import_task(ctx: JobContext) -> None:
    """Handler of ``import.csv`` (args: file, table, mode, max_errors, validate_only, options)."""
    try:
        conn = store.connect(ctx.settings, application_name="importd-worker")
    except psycopg.Error as exc:
        raise translate(exc) from exc
    with conn:
        try:
            ImportRun(ctx, conn).run()
        except psycopg.Error as exc:
            error = translate(exc)
            if isinstance(error, PermanentError):
                _record_failure(ctx, str(error))
            raise error from exc


def on_import_retry(ctx: JobContext, exc: BaseException) -> None:
    """The attempt failed and will be retried: RETRY, attempts and the error (best effort)."""
    error = f"{type(exc).__name__}: {exc}"[:2000]
    try:
        with store.connect(ctx.settings) as conn:
            rec = store.update_job(conn, ctx.job.job_id, only_unfinished=True, state="RETRY",
                                   attempts=ctx.job.attempt, error=error)
    except psycopg.Error as db_exc:
        ctx.log.warning("could not record RETRY", error=str(db_exc))
        rec = None
    if rec is not None:
        progress_for(ctx.settings).set_state(ctx.job.job_id, "RETRY", attempt=ctx.job.attempt, error=error)


def on_import_give_up(ctx: JobContext, exc: BaseException) -> None:
    """No retries left: FAILURE with the error, unless the job already reached a final state."""
    _record_failure(ctx, f"gave up after {ctx.job.attempt} attempts: {type(exc).__name__}: {exc}"[:2000])


def _record_failure(ctx: JobContext, error: str) -> None:
    try:
        with store.connect(ctx.settings) as conn:
            rec = store.update_job(conn, ctx.job.job_id, only_unfinished=True, state="FAILURE",
                                   error=error, finished_at=NOW, attempts=ctx.job.attempt)
    except psycopg.Error as db_exc:
        ctx.log.error("could not record FAILURE", error=str(db_exc))
        return
    if rec is not None:
        progress_for(ctx.settings).set_state(ctx.job.job_id, "FAILURE", error=error,
                                             rows=rec.rows_imported, rejected=rec.rows_rejected)


def run_bulk_task(ctx: JobContext) -> None:
    """Handler of ``bulk.operations``: ``{"op": "analyze", "table": T}`` on an allowlisted table."""
    op, table = ctx.job.args.get("op"), ctx.job.args.get("table")
    if op != "analyze":
        raise PermanentError(f"unknown bulk operation {op!r}")
    try:
        schema, name = targets.allowed(ctx.settings, str(table or ""))
    except targets.TargetError as exc:
        raise PermanentError(str(exc)) from exc
    try:
        with store.connect(ctx.settings, application_name="importd-worker") as conn:
            conn.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
    except psycopg.Error as exc:
        raise translate(exc) from exc
    ctx.log.info("table analyzed", table=f"{schema}.{name}")


def publish_analyze(settings: Settings, job_id: str, table: str, log: Any) -> None:
    """Queue ANALYZE of ``table`` after a successful import (best effort: logged if it fails)."""
    from importd.publisher import Publisher

    try:
        publisher = _publishers.get(settings.broker_url)
        if publisher is None:
            publisher = _publishers[settings.broker_url] = Publisher(settings)
        publisher.publish(Job(job_id=f"{job_id}.analyze", task="bulk.operations",
                              args={"op": "analyze", "table": table}))
    except Exception as exc:  # noqa: BLE001 - the import is done; ANALYZE is an optimisation
        log.warning("could not queue ANALYZE", table=table, error=str(exc))


# -- one run ------------------------------------------------------------------------------

class ImportRun:
    """One delivery of one import job on one connection (autocommit until loading starts)."""

    def __init__(self, ctx: JobContext, conn: psycopg.Connection[Any]) -> None:
        self.ctx, self.conn, self.settings = ctx, conn, ctx.settings
        self.job_id = ctx.job.job_id
        self.log = ctx.log
        self.progress = progress_for(ctx.settings)
        self.rows = self.rejected = self.stored = 0
        self.pending_rejects: list[Reject] = []

    def run(self) -> None:
        locked = self.conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                                   (f"importd.job:{self.job_id}",)).fetchone()
        if not locked or not locked[0]:
            raise Deferred("locked")
        rec = store.get_job(self.conn, self.job_id) or self._create_from_args()
        if rec.finished:
            self.log.info("job already finished, nothing to do", state=rec.state)
            return
        if rec.cancel_requested:
            self._finish(rec, "CANCELLED", "cancelled before it started")
            return
        started = store.update_job(self.conn, self.job_id, only_unfinished=True, state="STARTED",
                                   attempts=self.ctx.job.attempt, worker=worker_name(), error=None,
                                   **({"started_at": NOW} if rec.started_at is None else {}))
        if started is None:
            return
        self.progress.set_state(self.job_id, "STARTED", attempt=self.ctx.job.attempt,
                                table=rec.target_table, total_bytes=rec.file_size)
        try:
            self._import(started)
        finally:
            self.progress.forget(self.job_id)

    def _create_from_args(self) -> JobRecord:
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

    def _fail(self, rec: JobRecord, reason: str) -> PermanentError:
        """Record FAILURE with ``reason``; the caller raises what this returns."""
        self._finish(rec, "FAILURE", reason)
        return PermanentError(reason)

    def _finish(self, rec: JobRecord, state: str, error: str | None) -> None:
        """Write the final state (and pending rejected rows) in the current transaction; commit."""
        self._store_rejects()
        store.update_job(self.conn, self.job_id, only_unfinished=True, state=state, error=error,
                         rows_imported=self.rows, rows_rejected=self.rejected, finished_at=NOW)
        if not self.conn.autocommit:
            self.conn.commit()
        self.progress.set_state(self.job_id, state, rows=self.rows, rejected=self.rejected,
                                error=error or "", table=rec.target_table)

    def _store_rejects(self) -> None:
        room = store.MAX_STORED_REJECTS - self.stored
        keep = self.pending_rejects[:max(0, room)]
        store.add_rejected_rows(self.conn, self.job_id, keep)
        self.stored += len(keep)
        self.pending_rejects = []

    def _open(self, rec: JobRecord) -> tuple[Path, ImportOptions, targets.Target]:
        try:
            opts = options_of(rec, self.settings)
        except JobArgsError as exc:
            raise self._fail(rec, f"invalid options: {exc}") from exc
        path = Path(rec.file_path or "")
        upload = self.settings.upload_dir.resolve()
        resolved = path.resolve()
        if not rec.file_path or not resolved.is_relative_to(upload):
            raise self._fail(rec, f"file path {rec.file_path!r} is outside the upload directory")
        if not resolved.is_file():
            raise self._fail(rec, f"file not found: {rec.file_path}")
        if rec.file_size is not None and rec.checkpoint_offset and resolved.stat().st_size != rec.file_size:
            raise self._fail(rec, "the file changed since the job was created; cannot resume")
        try:
            target = targets.load(self.conn, self.settings, rec.target_table or "")
        except targets.TargetError as exc:
            raise self._fail(rec, str(exc)) from exc
        return resolved, opts, target

    def _import(self, rec: JobRecord) -> None:
        path, opts, target = self._open(rec)
        with path.open("rb") as f:
            try:
                header = csvscan.read_header(f, opts.load.encoding, opts.delimiter, opts.load.max_line_bytes)
                columns = targets.map_header(target, header.fields, opts.mapping)
            except (csvscan.CsvFormatError, targets.TargetError) as exc:
                raise self._fail(rec, str(exc)) from exc
            load_opts = opts.with_delimiter(header.delimiter)
            engine = loader.Loader(self.conn, target, columns, load_opts)
            try:
                engine.prepare()
            except psycopg.errors.DataError as exc:
                raise self._fail(rec, str(exc)) from exc
            resumable = rec.mode == "resumable" and not opts.validate_only
            offset, line = header.data_offset, 1 + header.lines
            if resumable and rec.checkpoint_offset > offset:
                offset, line = rec.checkpoint_offset, 1 + _count_lines(f, rec.checkpoint_offset)
                self.rows, self.rejected = rec.checkpoint_rows, rec.rows_rejected
                self.log.info("resuming from checkpoint", offset=offset, rows=self.rows)
            if resumable:
                self.stored = _stored_rejects(self.conn, self.job_id)
            elif rec.attempts > 1 or rec.checkpoint_offset:
                store.delete_rejected_rows(self.conn, self.job_id)
            self.conn.autocommit = False
            try:
                outcome = self._load(rec, f, engine, offset, line, opts, resumable)
            except csvscan.CsvFormatError as exc:
                self._roll_back(resumable)
                raise self._fail(rec, str(exc)) from exc
        self._conclude(rec, target, outcome, opts, resumable)

    def _load(self, rec: JobRecord, f: Any, engine: loader.Loader, offset: int, line: int,
              opts: ImportOptions, resumable: bool) -> str:
        """Load every batch; return "done", "cancelled" or "too-many-errors"."""
        committing = resumable
        size = rec.file_size or 0
        batches = read_batches(f, offset, line, engine.opts)
        with contextlib.closing(batches):  # stops the read-ahead thread before the file closes
            return self._load_batches(batches, engine, opts, committing, size)

    def _load_batches(self, batches: Any, engine: loader.Loader, opts: ImportOptions, committing: bool,
                      size: int) -> str:
        for batch in batches:
            self.ctx.check()
            if self._cancel_requested():
                return "cancelled"
            result = engine.load(batch)
            self.rows += result.rows
            self.rejected += len(result.rejects)
            self.pending_rejects.extend(result.rejects)
            if committing and self.rejected > opts.max_errors:
                committing = False  # this batch and the rest are only counted, never committed
            if committing:
                self._store_rejects()
                store.update_job(self.conn, self.job_id, checkpoint_offset=batch.end,
                                 checkpoint_rows=self.rows, rows_imported=self.rows,
                                 rows_rejected=self.rejected)
                self.conn.commit()
            elif self.pending_rejects and len(self.pending_rejects) > store.MAX_STORED_REJECTS:
                del self.pending_rejects[store.MAX_STORED_REJECTS:]
            self.progress.update(self.job_id, rows=self.rows, bytes=batch.end, total_bytes=size,
                                 rejected=self.rejected)
            if self.rejected > opts.max_errors + COUNT_LIMIT:
                break
        return "too-many-errors" if self.rejected > opts.max_errors else "done"

    def _roll_back(self, resumable: bool) -> None:
        """Drop the uncommitted part; ``rows`` becomes what stays in the table."""
        self.conn.rollback()
        if resumable:
            found = store.get_job(self.conn, self.job_id)
            self.rows = found.checkpoint_rows if found else 0
        else:
            self.rows = 0

    def _cancel_requested(self) -> bool:
        row = self.conn.execute("SELECT cancel_requested FROM importd.jobs WHERE id = %s",
                                (self.job_id,)).fetchone()
        return bool(row and row[0])

    def _conclude(self, rec: JobRecord, target: targets.Target, outcome: str, opts: ImportOptions,
                  resumable: bool) -> None:
        if outcome == "done" and not opts.validate_only:
            self._finish(rec, "SUCCESS", _summary(self.rejected, self.pending_rejects, opts.max_errors)
                         if self.rejected else None)
            self.log.info("import succeeded", rows=self.rows, rejected=self.rejected, table=target.name)
            publish_analyze(self.settings, self.job_id, target.name, self.log)
            return
        counted_rows = self.rows
        self._roll_back(resumable)
        if outcome == "cancelled":
            self._finish(rec, "CANCELLED", "cancelled on request")
            self.log.info("import cancelled", rows=self.rows)
            return
        if outcome == "done":  # validate_only, valid enough
            self.rows = counted_rows
            self._finish(rec, "SUCCESS", _summary(self.rejected, self.pending_rejects, opts.max_errors)
                         if self.rejected else None)
            return
        if opts.validate_only:
            self.rows = counted_rows
        reason = _summary(self.rejected, self.pending_rejects, opts.max_errors, stopped=self.rejected
                          > opts.max_errors + COUNT_LIMIT)
        raise self._fail(rec, reason)


def _summary(rejected: int, rejects: list[Reject], max_errors: int, stopped: bool = False) -> str:
    count = f"more than {rejected - 1}" if stopped else str(rejected)
    text = f"{count} row(s) rejected (max_errors {max_errors})"
    if rejects:
        line, column, _value, reason = rejects[0]
        text += f"; first: line {line}" + (f", column {column}" if column else "") + f": {reason}"
    return text


def _count_lines(f: Any, end: int) -> int:
    """Newlines in the file before byte ``end`` (streamed in 8 MiB pieces)."""
    f.seek(0)
    total, left = 0, end
    while left > 0:
        chunk = f.read(min(left, 8 * 1024 * 1024))
        if not chunk:
            break
        total += chunk.count(b"\n")
        left -= len(chunk)
    return total


def _stored_rejects(conn: psycopg.Connection[Any], job_id: str) -> int:
    row = conn.execute("SELECT count(*) FROM importd.rejected_rows WHERE job_id = %s", (job_id,)).fetchone()
    return int(row[0]) if row else 0
