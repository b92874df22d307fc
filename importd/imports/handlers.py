"""The ``import.csv`` and ``bulk.operations`` task handlers: one import job, exactly once.

A run, in order: take a session advisory lock on the job id (busy: another delivery runs it
-> :class:`~importd.errors.Deferred`); read the job row (missing: create it from the message
if the arguments are valid); a job already final is a no-op; mark it STARTED; check the file
(inside the upload directory), the table (allowlist, catalog) and the header; then load the
file with :mod:`importd.imports.copy.loader` (the run itself: :class:`importd.imports.run.ImportRun`).
A cleanly finished run leaves its connection to the next job of the process.

- ``atomic`` (default): every batch in one transaction, committed together with the job's
  SUCCESS; any crash rolls everything back and a redelivery starts over.
- ``resumable``: each batch commits together with the job's checkpoint (byte offset, rows,
  rejected rows); a redelivery resumes after the checkpoint. A file of more than one batch
  loads on two connections at once, committing in file order
  (:mod:`importd.imports.copy.streams`). A resumable job that ends in
  FAILURE (too many bad rows) or CANCELLED keeps the batches it committed.
- ``validate_only``: the same path in a transaction that is always rolled back.

``max_errors`` (default 0) decides the outcome: more rejected rows than that is FAILURE
with the error report (rows are still counted to the end of the file, up to
:data:`importd.imports.run.COUNT_LIMIT` past ``max_errors``). Library errors are translated at the boundary:
connection loss, deadlocks, serialization failures, admin shutdown, cancels and lock
timeouts are :class:`~importd.errors.TransientError` (retried); what cannot pass is recorded
as FAILURE and raised as :class:`~importd.errors.PermanentError` (acked).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import pq, sql

from importd.config import Settings
from importd.errors import PermanentError, TransientError
from importd.imports import progress, storage, store, targets
from importd.imports.progress import Progress
from importd.imports.run import ImportRun, connect, lock_key, worker_name  # noqa: F401 - re-exported
from importd.imports.store import NOW
from importd.worker.context import JobContext

#: SQLSTATE classes that can pass: connection (08), rollback (40: deadlock, serialization),
#: resources (53), operator intervention (57: cancel, admin shutdown), system (58).
TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")
TRANSIENT_CODES = ("55P03",)  # lock_not_available

_connections: dict[str, psycopg.Connection[Any]] = {}


def progress_for(settings: Settings) -> Progress:
    """The process's shared Progress (keeps its Redis back-off state between jobs)."""
    return progress.shared(settings)


def translate(exc: psycopg.Error) -> TransientError | PermanentError:
    state = exc.sqlstate or ""
    text = f"{type(exc).__name__}: {str(exc).strip()}"[:2000]
    if (isinstance(exc, psycopg.OperationalError) and not state) or state[:2] in TRANSIENT_CLASSES \
            or state in TRANSIENT_CODES:
        return TransientError(text)
    return PermanentError(text)


def run_import_task(ctx: JobContext) -> None:
    """Handler of ``import.csv`` (args: file, table, mode, max_errors, validate_only, options)."""
    try:
        conn = _take_connection(ctx.settings)
    except psycopg.Error as exc:
        raise translate(exc) from exc
    try:
        ImportRun(ctx, conn).run()
    except psycopg.Error as exc:
        conn.close()
        error = translate(exc)
        if isinstance(error, PermanentError):
            _record_failure(ctx, str(error))
        raise error from exc
    except PermanentError:
        conn.close()
        _retire_upload(ctx, failed_here=True)
        raise
    except BaseException:
        conn.close()
        raise
    _give_back(ctx.settings, conn)
    _retire_upload(ctx)


def _retire_upload(ctx: JobContext, failed_here: bool = False) -> None:
    """The job reached its own outcome: apply ``IMPORTD_UPLOAD_RETENTION`` to its object
    (:func:`importd.imports.storage.retire`; a retried job never gets here). A FAILURE counts
    only when this run recorded it (``failed_here``): a run that finds the job already FAILED
    may be a stray delivery of a job given up on, whose message sits in failed_tasks and whose
    replay needs the file."""
    if ctx.settings.upload_retention == "keep":
        return
    try:
        with store.connect(ctx.settings) as conn:
            rec = store.get_job(conn, ctx.job.job_id)
    except psycopg.Error as exc:
        ctx.log.warning("could not read the job for upload retention", error=str(exc))
        return
    if rec is not None and rec.finished and (failed_here or rec.state != "FAILURE"):
        storage.retire(ctx.settings, rec.state, rec.file_path, ctx.log)


def _take_connection(settings: Settings) -> psycopg.Connection[Any]:
    """The process's idle import connection if it has one, else a new one.

    Reusing it saves a connection (a backend fork) per job: small files are mostly overhead.
    """
    conn = _connections.pop(settings.database_url, None)
    if conn is not None and not conn.closed and conn.info.transaction_status == pq.TransactionStatus.IDLE:
        try:
            conn.execute("SELECT 1")  # the server may have closed it meanwhile (restart, idle timeout)
            return conn
        except psycopg.Error:
            pass
    if conn is not None:
        conn.close()
    return connect(settings)


def _give_back(settings: Settings, conn: psycopg.Connection[Any]) -> None:
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
    old = _connections.pop(settings.database_url, None)
    if old is not None:
        old.close()
    _connections[settings.database_url] = conn


def on_import_retry(ctx: JobContext, exc: BaseException) -> None:
    """The attempt failed and will be retried: RETRY, attempts and the error (best effort).

    A job whose lock another session holds is still running there (this delivery was a
    redelivery of a live job, e.g. after a consumer_timeout): its state is left alone.
    """
    error = f"{type(exc).__name__}: {exc}"[:2000]
    try:
        with store.connect(ctx.settings) as conn:
            if _running_elsewhere(conn, ctx.job.job_id):
                ctx.log.info("job still running elsewhere; state left as is")
                return
            rec = store.update_job(conn, ctx.job.job_id, only_unfinished=True, state="RETRY",
                                   attempts=ctx.job.attempt, error=error)
    except psycopg.Error as db_exc:
        ctx.log.warning("could not record RETRY", error=str(db_exc))
        rec = None
    if rec is not None:
        progress_for(ctx.settings).set_state(ctx.job.job_id, "RETRY", attempt=ctx.job.attempt, error=error)


def on_import_give_up(ctx: JobContext, exc: BaseException) -> None:
    """No retries left: FAILURE with the error, unless the job already reached a final state
    or another delivery is still running it (holds its lock)."""
    _record_failure(ctx, f"gave up after {ctx.job.attempt} attempts: {type(exc).__name__}: {exc}"[:2000],
                    unless_locked=True)


def _running_elsewhere(conn: psycopg.Connection[Any], job_id: str) -> bool:
    """Whether another session holds the job's lock (a live delivery of it runs there).

    A free lock is taken and goes with ``conn`` when the caller closes it.
    """
    free = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (lock_key(job_id),)).fetchone()
    return not free or not free[0]


def _record_failure(ctx: JobContext, error: str, unless_locked: bool = False) -> None:
    try:
        with store.connect(ctx.settings) as conn:
            if unless_locked and _running_elsewhere(conn, ctx.job.job_id):
                ctx.log.warning("job still running elsewhere; not marked FAILURE")
                return
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


