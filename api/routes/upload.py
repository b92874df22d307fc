"""``POST /api/upload``: receive the CSV, check it, create and publish the job, answer 202.

The header row is checked against the table by ``importd.imports.submit.submit`` before anything is
queued; its problems come back as 400 ``bad_upload`` with the list in ``problems``. With an
``Idempotency-Key`` header the same request returns the same job: a key already used is
compared with the body (its sha256, read and stored nowhere) and the options, and answers the
job (202, ``Idempotent-Replayed``) or 422 ``idempotency_key_reused`` if they differ; two
requests racing with one key meet at the unique index and the loser is compared the same way.
"""

from __future__ import annotations

import uuid
from typing import Any

from kombu.exceptions import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from api import bodies, views
from api.errors import ApiError
from api.routes.preview import parse_columns
from api.services import Services, services
from importd import logs
from importd.errors import PublishError
from importd.imports import storage, store, targets
from importd.imports.options import JobArgsError, normalize
from importd.imports.submit import TASK, SubmitError, submit
from importd.worker import tasks

log = logs.get("api.upload")

#: Longest Idempotency-Key accepted.
MAX_IDEMPOTENCY_KEY = 200
MODES = ("atomic", "resumable")
#: CSV options passed through to the importer (``options``), from form fields or the query.
CSV_OPTIONS = ("delimiter", "encoding", "on_conflict")


def _int(params: dict[str, str], name: str, low: int, high: int) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, "bad_request", f"{name} must be between {low} and {high}")
    return value


def _bool(params: dict[str, str], name: str) -> bool:
    raw = (params.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ApiError(400, "bad_request", f"{name} must be true or false")


def parse_options(params: dict[str, str]) -> dict[str, Any]:
    """The submit() keyword arguments from the request's form fields and query parameters."""
    table = (params.get("table") or "").strip()
    if not table:
        raise ApiError(400, "bad_request", "table is required")
    mode = params.get("mode") or "atomic"
    if mode not in MODES:
        raise ApiError(400, "bad_request", f"mode must be one of {', '.join(MODES)}")
    options: dict[str, Any] = {name: params[name] for name in CSV_OPTIONS if params.get(name)}
    columns = parse_columns(params.get("columns"))  # the mapping the page's user confirmed
    if columns:
        options["columns"] = columns
    return {
        "table": table,
        "priority": _int(params, "priority", 0, 10),
        "mode": mode,
        "max_errors": _int(params, "max_errors", 0, 2**31 - 1) or 0,
        "validate_only": _bool(params, "validate_only"),
        "options": options or None,
    }


def accepted(rec: Any, replayed: bool = False) -> Response:
    body = {"job_id": rec.id, "state": rec.state, "status_url": f"/api/jobs/{rec.id}",
            "events_url": f"/api/jobs/{rec.id}/events", "errors_url": f"/api/jobs/{rec.id}/errors",
            "job": views.from_record(rec)}
    headers = {"Location": f"/api/jobs/{rec.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body, status_code=202, headers=headers)


async def _by_key(svc: Services, key: str | None) -> store.JobRecord | None:
    if key is None:
        return None
    return await svc.with_db(store.get_job_by_idempotency_key, key)


def _submit(svc: Services, source: Any, key: str | None, kwargs: dict[str, Any],
            job_id: str | None = None) -> store.JobRecord:
    kwargs = dict(kwargs)
    return submit(svc.settings, source, kwargs.pop("table"), idempotency_key=key, publisher=svc.publisher,
                  tracker=svc.progress,
                  job_id=job_id, **kwargs)


async def upload_csv(request: Request) -> Response:
    svc = services(request)
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise ApiError(400, "bad_request", f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    params = dict(request.query_params)
    existing = await _by_key(svc, key)
    if existing is not None:
        return await _replayed(svc, request, params, existing)
    if bodies.is_multipart(request):
        rec, size, replayed = await _from_multipart(svc, request, params, key)
    else:
        rec, size, replayed = await _from_raw_body(svc, request, params, key)
    if replayed:
        return accepted(rec, replayed=True)
    log.info("job submitted", job_id=rec.id, table=rec.target_table, bytes=size, priority=rec.priority)
    return accepted(rec)


async def _replayed(svc: Services, request: Request, params: dict[str, str], rec: store.JobRecord) -> Response:
    """The answer to a request whose Idempotency-Key already names job ``rec``: that job (202,
    ``Idempotent-Replayed``) if the request is the same one again, 422 if it is another (a
    different file or options). The body is read to compare its sha256 and stored nowhere."""
    limit = svc.settings.max_upload_bytes
    if bodies.is_multipart(request):
        sha256, fields = await bodies.hash_multipart(request, limit, svc.settings.max_part_header_bytes)
        kwargs = parse_options({**params, **fields})
    else:
        kwargs = parse_options(params)
        sha256 = await bodies.hash_raw(request, limit)
    same_request_or_422(svc, rec, kwargs, sha256)
    return accepted(rec, replayed=True)


def same_request_or_422(svc: Services, rec: store.JobRecord, kwargs: dict[str, Any], sha256: str) -> None:
    """Raise 422 ``idempotency_key_reused`` unless ``kwargs`` and a file of ``sha256`` describe
    job ``rec`` (its table, mode, priority, options and file).

    A key names one request (the IETF Idempotency-Key draft): answering another request with
    the first one's job told the client its second file was queued when nothing was.
    """
    def mismatch(what: str) -> ApiError:
        return ApiError(422, "idempotency_key_reused", f"the Idempotency-Key was used for another request "
                        f"(job {rec.id}): {what} differ(s); use a new key for a new upload", job_id=rec.id)

    try:
        table = targets.allowed(svc.settings, kwargs["table"])
        opts = normalize(kwargs["options"], max_errors=kwargs["max_errors"], validate_only=kwargs["validate_only"])
    except (targets.TargetError, JobArgsError) as exc:
        raise mismatch(f"table or options ({exc})") from None
    spec = tasks.get(TASK)
    priority = kwargs["priority"] if kwargs["priority"] is not None else (spec.default_priority if spec else 0)
    try:
        same_table = targets.allowed(svc.settings, rec.target_table or "") == table
    except targets.TargetError:
        same_table = False
    if not same_table or rec.mode != kwargs["mode"] or rec.priority != priority or rec.options != opts:
        raise mismatch("table, mode, priority or options")
    if rec.checksum != f"sha256:{sha256}":
        raise mismatch("the file's bytes")


async def _from_multipart(svc: Services, request: Request, params: dict[str, str],
                          key: str | None) -> tuple[store.JobRecord, int, bool]:
    """Stream the file part into the upload store as the job's object (fields may follow it),
    then submit the stored object (nothing written twice; deleted if the job is refused).
    The job, the body's size, and whether the job is another request's (its Idempotency-Key
    taken meanwhile by a request racing this one: compared as a replay)."""
    job_id = uuid.uuid4().hex
    upload = await run_in_threadpool(storage.from_settings, svc.settings)  # first call may import boto3
    received = await bodies.receive_multipart(request, upload, f"{job_id}.csv", svc.settings.max_upload_bytes,
                                              svc.settings.max_part_header_bytes)
    try:
        kwargs = parse_options({**params, **received.fields})
    except BaseException:
        await run_in_threadpool(upload.delete, received.stored.key)
        raise
    try:
        rec = await run_in_threadpool(_submit, svc, received.stored, key, kwargs, job_id)
    except Exception as exc:
        raise _translate(exc) from exc
    if rec.id != job_id:
        same_request_or_422(svc, rec, kwargs, received.stored.sha256)
    return rec, received.size, rec.id != job_id


async def _from_raw_body(svc: Services, request: Request, params: dict[str, str],
                         key: str | None) -> tuple[store.JobRecord, int, bool]:
    """Options are all in the query: check them, then let submit read the body straight to the
    job's file. Returns as :func:`_from_multipart` does."""
    kwargs = parse_options(params)
    try:
        targets.allowed(svc.settings, kwargs["table"])  # refuse before reading a byte of the body
    except targets.TargetError as exc:
        raise ApiError(400, "bad_upload", "; ".join(exc.problems), problems=exc.problems) from None
    bodies.check_raw(request, svc.settings.max_upload_bytes)
    reader = bodies.BodyReader(request, svc.settings.max_upload_bytes)
    job_id = uuid.uuid4().hex
    try:
        rec = await run_in_threadpool(_submit, svc, reader, key, kwargs, job_id)
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away during the upload") from None
    except Exception as exc:
        await reader.drain()
        raise _translate(exc) from exc
    if rec.id != job_id:  # submit found the key taken before or after reading the body
        same_request_or_422(svc, rec, kwargs, await reader.sha256_of_all())
    return rec, reader.size, rec.id != job_id


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, SubmitError):
        if exc.status == 413:
            return ApiError(413, "payload_too_large", "; ".join(exc.problems))
        return ApiError(400, "bad_upload", "; ".join(exc.problems), problems=exc.problems)
    if isinstance(exc, PublishError | OperationalError | ConnectionError):
        return ApiError(503, "broker_unavailable", "the job could not be queued; try again")
    return exc
