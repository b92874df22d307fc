"""``POST /api/preview``: a file's first records checked against the table, before any job.

The body is the CSV (raw, ``Content-Type: text/csv``, options in the query) or a multipart
form with a ``file`` part, like an upload; or there is no body and ``job_id`` names a job
whose stored file is previewed. Only the first :data:`importd.imports.preview.HEAD_BYTES`
of the file are kept (a raw body is not read past them; the page sends just that slice), so
the answer takes the same time for any file size. Nothing is stored and nothing is queued.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import bodies
from api.errors import ApiError
from api.routes.jobs import load_record
from api.services import services
from importd.config import Settings
from importd.imports import preview as previews
from importd.imports import storage
from importd.imports.options import JobArgsError, normalize
from importd.worker.messages import JOB_ID

#: Options a preview takes from the query or the form, as an upload does.
PREVIEW_OPTIONS = ("delimiter", "encoding")


def parse_columns(raw: str | None) -> dict[str, str | None] | None:
    """The ``columns`` parameter: a JSON object header name -> column, or null to ignore the
    field (400 otherwise)."""
    if raw is None or raw.strip() == "":
        return None
    value = bodies.json_value(raw, "columns")
    if not isinstance(value, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str))
                                              for k, v in value.items()):
        raise ApiError(400, "bad_request", "columns must be a JSON object: header name -> column (or null)")
    return value


def _rows(raw: str | None) -> int:
    if raw is None or raw == "":
        return previews.DEFAULT_ROWS
    try:
        rows = int(raw)
    except ValueError:
        raise ApiError(400, "bad_request", "rows must be an integer") from None
    if not 1 <= rows <= previews.MAX_ROWS:
        raise ApiError(400, "bad_request", f"rows must be between 1 and {previews.MAX_ROWS}")
    return rows


def _options(params: dict[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {name: params[name] for name in PREVIEW_OPTIONS if params.get(name)}
    columns = parse_columns(params.get("columns"))
    if columns:
        options["columns"] = columns
    try:
        return normalize(options)
    except JobArgsError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None


async def preview_csv(request: Request) -> Response:
    svc = services(request)
    params = dict(request.query_params)
    job_id = params.get("job_id")
    if job_id:
        head, more, params = await _stored_head(request, job_id, params)
    elif bodies.is_multipart(request):
        head, more, fields = await bodies.receive_multipart_head(request, previews.HEAD_BYTES,
                                                                 svc.settings.max_upload_bytes,
                                                                 svc.settings.max_part_header_bytes)
        params = {**params, **fields}
    else:
        bodies.check_raw(request, svc.settings.max_upload_bytes)
        head, more = await bodies.read_raw_head(request, previews.HEAD_BYTES)
    table = (params.get("table") or "").strip()
    if not table:
        raise ApiError(400, "bad_request", "table is required")
    options, rows = _options(params), _rows(params.get("rows"))
    try:
        body = await svc.with_db(previews.preview, svc.settings, head, more, table, options, rows)
    except previews.PreviewError as exc:
        raise ApiError(400, "bad_upload", "; ".join(exc.problems), problems=exc.problems) from None
    return JSONResponse(body)


async def _stored_head(request: Request, job_id: str, params: dict[str, str]) -> tuple[bytes, bool, dict[str, str]]:
    """The head of a job's stored file, with the job's table and options as defaults."""
    svc = services(request)
    if not JOB_ID.match(job_id):
        raise ApiError(404, "job_not_found", "no such job")
    rec = await load_record(svc, job_id)
    try:  # S3: a HEAD and a ranged GET, off the event loop so other requests go on meanwhile
        head, more = await run_in_threadpool(_read_stored_head, svc.settings, rec.file_path)
    except (storage.BadKey, storage.ObjectNotFound):
        raise ApiError(404, "file_not_found", f"job {job_id} has no stored file any more") from None
    defaults = {k: str(v) for k, v in (rec.options or {}).items() if k in PREVIEW_OPTIONS and v}
    if rec.options.get("columns"):
        defaults["columns"] = json.dumps(rec.options["columns"])
    merged = {"table": rec.target_table or "", **defaults, **{k: v for k, v in params.items() if v}}
    return head, more, merged


def _read_stored_head(settings: Settings, file_path: str | None) -> tuple[bytes, bool]:
    """The job's object in the upload store (or an old job's path inside the upload directory)."""
    source = storage.job_source(settings, file_path)
    with source.open() as f:
        return previews.read_head(f)
