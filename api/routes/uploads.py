"""Large files straight from the client to the object store (presigned S3 multipart upload).

1. ``POST /api/uploads`` with ``{"size": N}``: the API starts a multipart upload of the job's
   object and answers the part size and one presigned PUT URL per part. The id it answers is
   the future job's id.
2. The client (the page, curl, a script) PUTs each part to its URL, straight to the store; the
   API never sees those bytes.
3. ``GET /api/uploads/{id}?size=N``: the parts the store has, and fresh URLs for the missing
   ones, so a client whose connection dropped resends only what is missing.
4. ``POST /api/uploads/{id}/complete`` with the size, optionally the sha256 and/or the
   composite_sha256, and the import options (those of ``POST /api/upload``): the API checks
   every part is there and the size, completes the upload, hashes the object (a streamed read)
   and compares the checksums, checks the header against the table, records and queues the job
   (202, as ``POST /api/upload``). A second complete of the same id answers the job again.
   ``composite_sha256`` is the sha256 of the parts' binary sha256 digests concatenated in
   order: what a browser can compute (``crypto.subtle`` hashes a part natively, but has no
   incremental digest for a file of gigabytes); the API derives it from the same read.
5. ``DELETE /api/uploads/{id}``: a client that gives up aborts the multipart upload, so the
   parts it sent are not left in the store (204).

The store is the only state between these calls (the multipart upload is found by its key),
so any API process can answer any of them. An upload never completed stays in the store until
aborted: give the bucket a lifecycle rule ``AbortIncompleteMultipartUpload`` (README). With a
``file://`` store these routes answer 409 ``no_presigned_uploads``.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import bodies
from api.errors import ApiError
from api.routes.upload import _submit, _translate, accepted, parse_options
from api.services import services
from importd import logs
from importd.imports import storage, store
from importd.imports.storage import Part, StoredObject

log = logs.get("api.uploads")

#: Largest JSON body these routes read.
MAX_BODY_BYTES = 16 * 1024
#: S3 allows at most this many parts in one upload.
MAX_PARTS = 10_000
ID = re.compile(r"^[0-9a-f]{32}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: The body fields that are not import options.
UPLOAD_FIELDS = ("size", "sha256", "composite_sha256")


async def _body(request: Request) -> dict[str, Any]:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(413, "payload_too_large", f"a JSON body of at most {MAX_BODY_BYTES} bytes")
    body = bodies.json_value(raw or b"{}", "the body")
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return body


def _size(value: Any, limit: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ApiError(400, "bad_request", "size must be a positive integer (bytes)")
    if value > limit:
        raise ApiError(413, "payload_too_large", f"upload exceeds {limit} bytes", limit_bytes=limit)
    return value


def _object_store(request: Request) -> storage.Store:
    upload = storage.from_settings(services(request).settings)
    if isinstance(upload, storage.FileStore):
        raise ApiError(409, "no_presigned_uploads",
                       "the upload store is a directory (IMPORTD_STORAGE_URL file://): use POST /api/upload")
    return upload


def _id(request: Request) -> str:
    upload_id = str(request.path_params["upload_id"])
    if not ID.match(upload_id):
        raise ApiError(404, "not_found", "no such upload")
    return upload_id


def _part_count(size: int) -> int:
    return max(1, math.ceil(size / storage.PART_BYTES))


def _multipart_id(upload: storage.Store, key: str) -> str | None:
    found = [mp for k, mp in upload.open_multiparts() if k == key]
    return found[0] if found else None


def _links(upload_id: str) -> dict[str, str]:
    return {"status_url": f"/api/uploads/{upload_id}", "complete_url": f"/api/uploads/{upload_id}/complete"}


async def create_upload(request: Request) -> Response:
    """Start a presigned multipart upload of ``size`` bytes (201 with the part URLs)."""
    svc = services(request)
    body = await _body(request)
    size = _size(body.get("size"), svc.settings.max_upload_bytes)
    upload = await run_in_threadpool(_object_store, request)
    count = _part_count(size)
    if count > MAX_PARTS:
        raise ApiError(413, "payload_too_large", f"more than {MAX_PARTS} parts of {storage.PART_BYTES} bytes")
    upload_id = uuid.uuid4().hex
    key = f"{upload_id}.csv"

    def start() -> dict[int, str]:
        mp = upload.create_multipart(key)
        return upload.part_urls(key, mp, list(range(1, count + 1)))

    urls = await _storage_call(start)
    log.info("presigned upload started", upload_id=upload_id, bytes=size, parts=count)
    return JSONResponse({"upload_id": upload_id, "size": size, "part_bytes": storage.PART_BYTES,
                         "expires_s": storage.PRESIGN_EXPIRES_S, **_links(upload_id),
                         "parts": [{"number": n, "url": u} for n, u in urls.items()]}, status_code=201)


async def upload_status(request: Request) -> Response:
    """The parts the store has, and fresh URLs for the missing ones (given ``?size=``)."""
    svc = services(request)
    upload_id = _id(request)
    raw = request.query_params.get("size")
    try:
        size = _size(int(raw), svc.settings.max_upload_bytes) if raw else None
    except ValueError:
        raise ApiError(400, "bad_request", "size must be a positive integer (bytes)") from None
    upload = await run_in_threadpool(_object_store, request)
    key = f"{upload_id}.csv"

    def look() -> tuple[list[Part], dict[int, str]]:
        mp = _multipart_id(upload, key)
        if mp is None:
            raise ApiError(404, "not_found", "no such upload in progress")
        parts = upload.list_parts(key, mp)
        missing = sorted(set(range(1, _part_count(size) + 1)) - {p.number for p in parts}) if size else []
        return parts, upload.part_urls(key, mp, missing)

    parts, urls = await _storage_call(look)
    return JSONResponse({"upload_id": upload_id, "part_bytes": storage.PART_BYTES, **_links(upload_id),
                         "received": [{"number": p.number, "size": p.size} for p in parts],
                         "missing": [{"number": n, "url": u} for n, u in urls.items()]})


async def complete_upload(request: Request) -> Response:
    """Check parts, size and sha256, complete, then check the header and queue the job (202)."""
    svc = services(request)
    upload_id = _id(request)
    body = await _body(request)
    size = _size(body.get("size"), svc.settings.max_upload_bytes)
    sha256, composite = _hex_digest(body, "sha256"), _hex_digest(body, "composite_sha256")
    params = {k: (json.dumps(v) if isinstance(v, bool) else str(v)) for k, v in body.items()
              if k not in UPLOAD_FIELDS and v is not None}
    kwargs = parse_options(params)
    existing = await svc.with_db(store.get_job, upload_id)
    if existing is not None:
        return accepted(existing, replayed=True)
    upload = await run_in_threadpool(_object_store, request)
    stored = await _storage_call(_assemble, upload, f"{upload_id}.csv", size, sha256, composite)
    try:
        rec = await run_in_threadpool(_submit, svc, stored, None, kwargs, upload_id)
    except Exception as exc:
        raise _translate(exc) from exc
    log.info("job submitted", job_id=rec.id, table=rec.target_table, bytes=size, priority=rec.priority,
             presigned=True)
    return accepted(rec)


def _hex_digest(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not SHA256.match(value.lower()):
        raise ApiError(400, "bad_request", f"{name} must be 64 hex digits")
    return value.lower()


def _assemble(upload: storage.Store, key: str, size: int, sha256: str | None,
              composite: str | None = None) -> StoredObject:
    """Complete the multipart upload once every part is there and the sizes add up; hash the
    object (and its parts, for ``composite``); a wrong checksum deletes it (the client starts
    again)."""
    mp = _multipart_id(upload, key)
    if mp is not None:
        parts = upload.list_parts(key, mp)
        missing = sorted(set(range(1, _part_count(size) + 1)) - {p.number for p in parts})
        if missing:
            raise ApiError(400, "upload_incomplete", "parts are missing", missing=missing[:100])
        if sum(p.size for p in parts) != size:
            raise ApiError(400, "size_mismatch", f"the parts hold {sum(p.size for p in parts)} bytes, not {size}")
        upload.complete_multipart(key, mp, parts)
    elif not upload.exists(key):
        raise ApiError(404, "not_found", "no such upload")
    stored, digests = upload.part_checksums(key, storage.PART_BYTES if composite else 0)
    found = storage.composite_sha256(digests) if composite else None
    if stored.size != size or (sha256 and stored.sha256 != sha256) or found != composite:
        upload.delete(key)
        raise ApiError(400, "checksum_mismatch", "the stored object's size or checksum differs from the declared "
                       "one; it was deleted: upload again", size=stored.size, sha256=stored.sha256,
                       composite_sha256=found)
    return stored


async def abort_upload(request: Request) -> Response:
    """Abort a presigned upload the client gives up on: its parts leave the store (204)."""
    upload_id = _id(request)
    upload = await run_in_threadpool(_object_store, request)
    key = f"{upload_id}.csv"

    def abort() -> None:
        mp = _multipart_id(upload, key)
        if mp is None:
            raise ApiError(404, "not_found", "no such upload in progress")
        upload.abort_multipart(key, mp)

    await _storage_call(abort)
    log.info("presigned upload aborted", upload_id=upload_id)
    return Response(status_code=204)


async def _storage_call(fn: Any, *args: Any) -> Any:
    """Run a blocking store call; a store that cannot be reached is 503."""
    try:
        return await run_in_threadpool(fn, *args)
    except storage.StorageError as exc:
        raise ApiError(503, "storage_unavailable", "the upload store cannot be reached; try again") from exc
