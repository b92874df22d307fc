"""A job's rejected records as a file to fix and load again, and its errors grouped.

``GET /api/jobs/{id}/rejects.csv`` streams the job's reject file (published by the run that
ended it, see :mod:`importd.imports.rejectfile`): the upload's header, then every rejected
record as the original bytes, so it loads into the same table with the same options once
fixed. The file is read from the upload store (a directory, or S3 on any host: the API and the
worker that wrote it need share no disk). A job that has not ended yet, or rejected nothing,
has none (404); so has one whose file retention deleted. Rows of an importd before issue 14
name a local file on the worker's host by its absolute path: served if this host has it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import BinaryIO

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from api.errors import ApiError
from api.routes.jobs import job_id_of, load_record
from api.services import services
from importd.config import Settings
from importd.imports import rejectfile, storage

#: Bytes per read of the reject file.
CHUNK_BYTES = 256 * 1024


async def _chunks(f: BinaryIO, size: int) -> AsyncIterator[bytes]:
    """``size`` bytes of ``f`` (blocking reads in a worker thread), then ``f`` is closed."""
    with closing(f):
        left = size
        while left > 0:
            chunk = await anyio.to_thread.run_sync(f.read, min(CHUNK_BYTES, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def _open(settings: Settings, locator: str) -> BinaryIO | None:
    """The reject file named by a job_rejects row: a key in the upload store, or (rows of an
    importd before issue 14) an absolute local path; None if it is not there."""
    if os.path.isabs(locator):
        path = Path(locator)
        return path.open("rb") if path.is_file() else None
    try:
        return storage.from_settings(settings).open(locator)
    except (storage.ObjectNotFound, storage.BadKey):
        return None


async def job_rejects_csv(request: Request) -> Response:
    svc = services(request)
    job_id = job_id_of(request)
    await load_record(svc, job_id)  # 404 for no job
    found = await svc.with_db(rejectfile.summary, job_id)
    f = await run_in_threadpool(_open, svc.settings, found["file_path"]) if found and found["file_path"] else None
    if found is None or f is None:
        raise ApiError(404, "no_rejects", f"job {job_id} has no reject file (it has not ended, rejected nothing, "
                                          "or the file was removed)")
    return StreamingResponse(_chunks(f, found["file_bytes"]), media_type="text/csv",
                             headers={"Content-Disposition": f'attachment; filename="{job_id}-rejects.csv"',
                                      "Content-Length": str(found["file_bytes"])})
