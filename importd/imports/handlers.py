"""The ``import.csv`` and ``bulk.operations`` task handlers: one import job, exactly once.

Entry points the task table names, the translation of library errors into transient or
permanent ones, and the rule that an outcome is final only once it is durable (a FAILURE that
cannot be recorded is retried, never acked with the job left PENDING). The run itself:
:class:`importd.imports.run.ImportRun`; modes and failure classes: docs/importing.md.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from importd.errors import PermanentError, TransientError
from importd.imports import storage, store, targets
from importd.imports.copy.pgerrors import translate
from importd.imports.progress import Progress
from importd.imports.run import (  # noqa: F401 - re-exported
    ImportRun,
    RecordedFailure,
    connect,
    lock_key,
    try_lock,
    worker_name,
)
from importd.imports.runtime import Runtime
from importd.imports.states import JobState
from importd.imports.store import NOW
from importd.worker.context import JobContext


def progress_for(ctx: JobContext) -> Progress:
    """The process's Progress (keeps its Redis back-off state between jobs)."""
    return Runtime.of(ctx).progress


def run_import_task(ctx: JobContext) -> None:
    """Handler of ``import.csv`` (args: file, table, mode, max_errors, validate_only, options)."""
    runtime = Runtime.of(ctx)
    try:
        conn, kept = runtime.take_connection(lambda: connect(ctx.settings))
    except psycopg.Error as exc:
        raise translate(exc) from exc
    run = ImportRun(ctx, conn, kept=kept)  # run.conn: a kept connection found broken is replaced
    try:
        run.run()
    except psycopg.Error as exc:
        run.conn.close()
        error = translate(exc)
        if isinstance(error, PermanentError) and not _record_failure(ctx, str(error)):
            raise _unrecorded(error) from exc
        raise error from exc
    except PermanentError as exc:
        run.conn.close()
        if not isinstance(exc, RecordedFailure) and not _record_failure(ctx, f"{type(exc).__name__}: {exc}"[:2000]):
            raise _unrecorded(exc) from exc
        _retire_upload(ctx, failed_here=True)
        raise
    except BaseException:
        run.conn.close()
        raise
    runtime.give_back(run.conn)
    _retire_upload(ctx)


def _retire_upload(ctx: JobContext, failed_here: bool = False) -> None:
    """The job reached its own outcome: apply ``IMPORTD_UPLOAD_RETENTION`` to its object, and
    ``IMPORTD_REJECTS_RETENTION`` to its reject files (:func:`importd.imports.storage.retire`; a
    retried job never gets here). A FAILURE counts
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
    if rec is not None and rec.finished and (failed_here or rec.state != JobState.FAILURE):
        storage.retire(ctx.settings, rec.state, rec.file_path, ctx.log, job_id=rec.id)


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
            rec = store.update_job(conn, ctx.job.job_id, only_unfinished=True, state=JobState.RETRY,
                                   attempts=ctx.job.attempt, error=error)
    except psycopg.Error as db_exc:
        ctx.log.warning("could not record RETRY", error=str(db_exc))
        rec = None
    if rec is not None:
        progress_for(ctx).set_state(ctx.job.job_id, JobState.RETRY, attempt=ctx.job.attempt, error=error)


def on_import_give_up(ctx: JobContext, exc: BaseException) -> None:
    """No retries left: FAILURE with the error, unless the job already reached a final state
    or another delivery is still running it (holds its lock)."""
    _record_failure(ctx, f"gave up after {ctx.job.attempt} attempts: {type(exc).__name__}: {exc}"[:2000])


def _running_elsewhere(conn: psycopg.Connection[Any], job_id: str) -> bool:
    """Whether another session holds the job's lock (a live delivery of it runs there).

    A free lock is taken and goes with ``conn`` when the caller closes it.
    """
    return not try_lock(conn, job_id)


def _unrecorded(error: PermanentError) -> TransientError:
    """The error of a delivery whose FAILURE could not be written (issue 12 item 1): not an
    outcome yet, so the delivery is retried (and dead-lettered with this text at the end)."""
    return TransientError(f"could not record FAILURE ({error}); retrying the delivery"[:2000])


def _record_failure(ctx: JobContext, error: str) -> bool:
    """Write FAILURE with ``error`` on a connection of its own, holding the job's lock;
    whether the outcome is durable.

    True also when there was nothing to write (the job is final already, or another delivery
    runs it); False when the database refused or lost the write, or the job has no row (a
    FAILURE of nothing is no outcome), in which case the caller must not ack the delivery
    as an outcome (issue 12 item 1).
    The lock is the fence: a run that lost its lock (its main backend died) while another
    delivery took the job over must not end that delivery's job with its own error, as a
    checkpoint of it must not move (:func:`importd.imports.store.advance_checkpoint`).
    """
    try:
        with store.connect(ctx.settings) as conn:
            if _running_elsewhere(conn, ctx.job.job_id):
                ctx.log.warning("job still running elsewhere; not marked FAILURE")
                return True
            rec = store.update_job(conn, ctx.job.job_id, only_unfinished=True, state=JobState.FAILURE,
                                   error=error, finished_at=NOW, attempts=ctx.job.attempt)
            if rec is None and store.get_job(conn, ctx.job.job_id) is None:
                ctx.log.error("could not record FAILURE: the job has no row")
                return False
    except psycopg.Error as db_exc:
        ctx.log.error("could not record FAILURE", error=str(db_exc))
        return False
    if rec is not None:
        progress_for(ctx).set_state(ctx.job.job_id, JobState.FAILURE, error=error,
                                             rows=rec.rows_imported, rejected=rec.rows_rejected)
    return True


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


