"""Submitting an import: store the file (:mod:`importd.imports.storage`), check it, record, publish.

Shared by the API (an upload stream) and ``importd submit`` (a path). The header is checked
against the table before anything is queued, so a file that cannot load is refused at once
(:class:`SubmitError` lists every problem) instead of failing later in a worker.
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import psycopg

from importd.config import Settings
from importd.errors import PermanentError
from importd.imports import progress, storage, store, targets
from importd.imports.copy import scan
from importd.imports.options import MODES, JobArgsError, normalize
from importd.imports.storage import StoredObject
from importd.imports.store import JobRecord
from importd.worker.messages import Job

#: Bytes copied per read while storing an upload.
COPY_CHUNK = 1024 * 1024
#: Task name of imports.
TASK = "import.csv"


class SubmitError(PermanentError):
    """The request cannot become a job; ``problems`` says why (HTTP 400/413/422)."""

    def __init__(self, problems: list[str], status: int = 422) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.status = status


def submit(settings: Settings, source: str | os.PathLike[str] | BinaryIO | StoredObject, table: str, *,
           priority: int | None = None, mode: str = "atomic", max_errors: int = 0,
           validate_only: bool = False, options: dict[str, Any] | None = None,
           idempotency_key: str | None = None, publisher: Any, move: bool = False,
           job_id: str | None = None, tracker: progress.Progress | None = None) -> JobRecord:
    """Store ``source`` as a new job on ``table`` and publish it; return the PENDING job.

    ``tracker``: the caller's Progress (the API passes the one its lifespan holds, so every
    request shares one Redis back-off state); a new one otherwise.

    With ``idempotency_key`` a second submit returns the first job and stores nothing.
    ``move=True`` (``source`` a file this process spooled, e.g. a multipart upload the API
    wrote to disk) hands the file to the store, which renames it into place (file://) or
    sends it and removes it (s3://). A :class:`StoredObject` is already in the store (the API
    streamed a form's file part there under ``job_id``); submit owns it from here and deletes it
    if the job is refused.
    """
    try:
        return _submit(settings, source, table, priority=priority, mode=mode, max_errors=max_errors,
                       validate_only=validate_only, options=options, idempotency_key=idempotency_key,
                       publisher=publisher, move=move, job_id=job_id,
                       tracker=tracker or progress.Progress(settings))
    except BaseException:
        if isinstance(source, StoredObject):
            storage.from_settings(settings).delete(source.key)
        raise


def _submit(settings: Settings, source: str | os.PathLike[str] | BinaryIO | StoredObject, table: str, *,
            priority: int | None, mode: str, max_errors: int, validate_only: bool,
            options: dict[str, Any] | None, idempotency_key: str | None, publisher: Any, move: bool,
            job_id: str | None, tracker: progress.Progress) -> JobRecord:
    from importd.worker import tasks

    if mode not in MODES:
        raise SubmitError([f"mode must be one of {', '.join(MODES)}"], 400)
    spec = tasks.get(TASK)
    priority = spec.default_priority if priority is None and spec else (priority or 0)
    if not 0 <= int(priority) <= 10:
        raise SubmitError(["priority must be between 0 and 10"], 400)
    try:
        opts = normalize(options, max_errors=max_errors, validate_only=validate_only)
        targets.allowed(settings, table)
    except (JobArgsError, targets.TargetError) as exc:
        raise SubmitError(getattr(exc, "problems", [str(exc)]), 400) from exc
    with store.connect(settings) as conn:
        if idempotency_key:
            found = store.get_job_by_idempotency_key(conn, idempotency_key)
            if found is not None:
                if isinstance(source, StoredObject):
                    storage.from_settings(settings).delete(source.key)
                return found
        job_id = job_id or uuid.uuid4().hex
        stored = source if isinstance(source, StoredObject) else _store_file(settings, source, job_id, move)
        size = stored.size
        try:
            _check_header(conn, settings, stored.key, table, opts)
            rec = JobRecord(id=job_id, task=TASK, target_table=table, file_path=stored.key, file_size=size,
                            checksum=stored.checksum, state="PENDING", priority=int(priority), mode=mode,
                            options=opts, idempotency_key=idempotency_key)
            try:
                rec = store.create_job(conn, rec)
            except psycopg.errors.UniqueViolation:
                found = store.get_job_by_idempotency_key(conn, idempotency_key or "")
                if found is None:
                    raise
                storage.from_settings(settings).delete(stored.key)
                return found
        except BaseException:
            storage.from_settings(settings).delete(stored.key)
            raise
        # The message names the object (key, size, sha256), never a host path: API and workers
        # may share no directory. ``file`` (a path) is still read from messages queued before.
        args = {"object": stored.as_args(), "table": table, "mode": mode, "max_errors": opts["max_errors"],
                "validate_only": opts["validate_only"],
                "options": {k: v for k, v in opts.items() if k not in ("max_errors", "validate_only")}}
        # PENDING goes to Redis before the message exists: written after, it could land on top
        # of a fast worker's STARTED and send the job's state (and its event stream) backwards.
        tracker.set_state(job_id, "PENDING", table=table, total_bytes=size, rows=0, rejected=0, percent=0)
        try:
            publisher.publish(Job(job_id=job_id, task=TASK, args=args, priority=int(priority)))
        except Exception as exc:
            _never_queued(conn, tracker, job_id, table, f"could not queue the job: {exc}")
            raise
    return rec


def _never_queued(conn: psycopg.Connection[Any], tracker: progress.Progress, job_id: str, table: str,
                  error: str) -> None:
    """A job whose publish failed ends FAILURE and gives its idempotency key back.

    The client was told to retry (HTTP 503); a key kept on the failed job would hand that
    failure back to every retry. Released, the retry makes a new job under the same key. A
    message the broker did take after all (a confirm lost) finds this job finished and is a
    no-op in the worker, so the file is imported once either way.
    """
    store.update_job(conn, job_id, state="FAILURE", error=error, finished_at=store.NOW, idempotency_key=None)
    tracker.set_state(job_id, "FAILURE", table=table, error=error)


def _store_file(settings: Settings, source: str | os.PathLike[str] | BinaryIO,
                job_id: str, move: bool = False) -> StoredObject:
    """Store ``source`` as the object ``<job_id>.csv`` (size limit, sha256 as it streams): in the
    upload directory or the object store (:mod:`importd.imports.storage`). On any error
    nothing is left in the store."""
    upload = storage.from_settings(settings)
    key = f"{job_id}.csv"
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            _check_size(settings, path.stat().st_size)
        except (SubmitError, OSError) as exc:
            if move:
                path.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise SubmitError([f"cannot read {os.fspath(source)}: {exc.strerror}"], 400) from exc
            raise
        try:
            stored = upload.adopt(key, path) if move else upload.write_file(key, path)
        except OSError as exc:
            if exc.filename != os.fspath(source):  # the store's side: not the caller's fault
                raise
            raise SubmitError([f"cannot read {os.fspath(source)}: {exc.strerror}"], 400) from exc
        if stored.size > settings.max_upload_bytes:  # it grew while being copied
            upload.delete(key)
            _check_size(settings, stored.size)
        return stored
    return upload.write(key, _Limited(settings, source))  # type: ignore[arg-type]


class _Limited(io.RawIOBase):
    """``stream`` that raises SubmitError (413) as soon as more than ``max_upload_bytes`` came:
    the store aborts the write, so an oversized upload is never stored whole."""

    def __init__(self, settings: Settings, stream: BinaryIO) -> None:
        super().__init__()
        self.settings, self.stream, self.size = settings, stream, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        chunk = self.stream.read(COPY_CHUNK if n is None or n < 0 else n)
        self.size += len(chunk)
        _check_size(self.settings, self.size)
        return chunk


def _check_size(settings: Settings, size: int) -> None:
    if size > settings.max_upload_bytes:
        raise SubmitError([f"file larger than {settings.max_upload_bytes} bytes"], 413)


def _check_header(conn: psycopg.Connection[Any], settings: Settings, key: str, table: str,
                  opts: dict[str, Any]) -> None:
    """Refuse a file whose header cannot load into ``table`` (every problem listed)."""
    try:
        target = targets.load(conn, settings, table)
        enc = scan.encoding(opts.get("encoding"))
        with storage.from_settings(settings).open(key) as f:
            header = scan.read_header(f, enc, opts.get("delimiter"),
                                         int(opts.get("max_line_bytes", settings.max_line_bytes)))
        targets.map_header(target, header.fields, opts.get("columns"))
    except targets.TargetError as exc:
        raise SubmitError(exc.problems) from exc
    except (scan.CsvFormatError, ValueError) as exc:
        raise SubmitError([str(exc)]) from exc
