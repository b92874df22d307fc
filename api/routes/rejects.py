"""A job's rejected records as a file to fix and load again, and its errors grouped.

``GET /api/jobs/{id}/rejects.csv`` streams ``<upload>.rejects.csv`` (written by the run, see
:mod:`importd.imports.rejectfile`): the upload's header, then every rejected record as the
original bytes, so it loads into the same table with the same options once fixed. Only the
part the job recorded as written is sent (a resumable job's file may run ahead of its last
checkpoint while it loads).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from api.errors import ApiError
from api.routes.jobs import job_id_of, load_record
from api.services import services
from importd.imports import rejectfile

#: Bytes per read of the reject file.
CHUNK_BYTES = 256 * 1024


async def _chunks(path: Path, size: int) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as f:
        left = size
        while left > 0:
            chunk = await f.read(min(CHUNK_BYTES, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


async def job_rejects_csv(request: Request) -> Response:
    svc = services(request)
    job_id = job_id_of(request)
    await load_record(svc, job_id)  # 404 for no job
    found = await svc.with_db(rejectfile.summary, job_id)
    path = Path(found["file_path"]) if found else None
    if found is None or path is None or not path.is_file():
        raise ApiError(404, "no_rejects", f"job {job_id} has no reject file (it has not run, or it was removed)")
    return StreamingResponse(_chunks(path, found["file_bytes"]), media_type="text/csv",
                             headers={"Content-Disposition": f'attachment; filename="{job_id}-rejects.csv"',
                                      "Content-Length": str(found["file_bytes"])})
