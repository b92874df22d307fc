"""``GET /openapi.json``: the API described by hand, one dict (OpenAPI 3.0).

Written out rather than generated from docstrings so that the schemathesis test checks our
answers against a description a person wrote down, not one derived from the code under test.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

_nullable_str = {"type": "string", "nullable": True}
_nullable_int = {"type": "integer", "nullable": True}

ERROR = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"],
                             "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}},
}
STATE = {"type": "string", "enum": ["PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "CANCELLED"]}
JOB = {
    "type": "object",
    "required": ["id", "state", "rows_imported", "rows_rejected", "source", "links"],
    "properties": {
        "id": {"type": "string"}, "state": STATE, "table": _nullable_str,
        "mode": {"type": "string", "nullable": True, "enum": ["atomic", "resumable", None]},
        "priority": _nullable_int, "attempts": _nullable_int,
        "rows_imported": {"type": "integer"}, "rows_rejected": {"type": "integer"},
        "bytes": _nullable_int, "total_bytes": _nullable_int,
        "percent": {"type": "number", "nullable": True}, "error": _nullable_str,
        "cancel_requested": {"type": "boolean", "nullable": True},
        "created_at": _nullable_str, "started_at": _nullable_str, "finished_at": _nullable_str,
        "updated_at": _nullable_str,
        "source": {"type": "string", "enum": ["redis", "database"]},
        "links": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
ACCEPTED = {
    "type": "object", "required": ["job_id", "state", "status_url", "events_url", "job"],
    "properties": {"job_id": {"type": "string"}, "state": STATE, "status_url": {"type": "string"},
                   "events_url": {"type": "string"}, "errors_url": {"type": "string"},
                   "job": {"$ref": "#/components/schemas/Job"}},
}


def _err(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


JOB_ID_PARAM = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
UNAUTHORIZED = {"401": _err("missing or invalid bearer token (when tokens are configured)"),
                "403": _err("no tokens configured and the client is not on loopback")}
UPLOAD_QUERY = [
    {"name": "table", "in": "query", "schema": {"type": "string"}, "description": "target table (allowlisted)"},
    {"name": "priority", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 10}},
    {"name": "mode", "in": "query", "schema": {"type": "string", "enum": ["atomic", "resumable"]}},
    {"name": "max_errors", "in": "query", "schema": {"type": "integer", "minimum": 0}},
    {"name": "validate_only", "in": "query", "schema": {"type": "boolean"}},
    {"name": "delimiter", "in": "query", "schema": {"type": "string"}},
    {"name": "encoding", "in": "query", "schema": {"type": "string"}},
    {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 200}},
]
UPLOAD_FORM = {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary"}, "table": {"type": "string"},
                   "priority": {"type": "integer", "minimum": 0, "maximum": 10},
                   "mode": {"type": "string", "enum": ["atomic", "resumable"]},
                   "max_errors": {"type": "integer", "minimum": 0}, "validate_only": {"type": "boolean"}},
}

UPLOAD_ID_PARAM = {"name": "upload_id", "in": "path", "required": True, "schema": {"type": "string"}}
PRESIGNED = {
    "type": "object", "required": ["upload_id", "part_bytes", "parts", "complete_url"],
    "properties": {"upload_id": {"type": "string"}, "size": {"type": "integer"}, "part_bytes": {"type": "integer"},
                   "expires_s": {"type": "integer"}, "status_url": {"type": "string"},
                   "complete_url": {"type": "string"},
                   "parts": {"type": "array", "items": {"type": "object", "required": ["number", "url"]}}},
}
COMPLETE = {
    "type": "object", "required": ["size", "table"],
    "properties": {"size": {"type": "integer", "minimum": 1}, "sha256": {"type": "string"},
                   "table": {"type": "string"}, "priority": {"type": "integer", "minimum": 0, "maximum": 10},
                   "mode": {"type": "string", "enum": ["atomic", "resumable"]},
                   "max_errors": {"type": "integer", "minimum": 0}, "validate_only": {"type": "boolean"},
                   "delimiter": {"type": "string"}, "encoding": {"type": "string"}},
}

SCHEMA: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "importd", "version": "0.1.0",
             "description": "CSV uploads into PostgreSQL through RabbitMQ, progress over SSE."},
    "components": {
        "schemas": {"Error": ERROR, "Job": JOB, "Accepted": ACCEPTED},
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "paths": {
        "/healthz": {"get": {"summary": "the process answers", "responses": {
            "200": _json("alive", {"type": "object", "required": ["status"]}), **UNAUTHORIZED}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (queues, jobs, rows)", "responses": {
            "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
            **UNAUTHORIZED}}},
        "/readyz": {"get": {"summary": "RabbitMQ, PostgreSQL and Redis answer", "responses": {
            "200": _json("ready", {"type": "object", "required": ["status", "checks"]}),
            "503": _err("a service cannot be reached (named in the message and in checks)"), **UNAUTHORIZED}}},
        "/api/upload": {"post": {
            "summary": "upload a CSV and queue its import", "security": [{"bearer": []}],
            "parameters": UPLOAD_QUERY,
            "requestBody": {"required": True, "content": {
                "multipart/form-data": {"schema": UPLOAD_FORM},
                "text/csv": {"schema": {"type": "string"}}}},
            "responses": {
                "202": _json("job created (or the job of a reused Idempotency-Key)",
                             {"$ref": "#/components/schemas/Accepted"}),
                "400": _err("bad options, malformed body, or a CSV header that cannot be read or does not "
                            "fit the table (code bad_upload, every problem in problems)"),
                "413": _err("larger than IMPORTD_MAX_UPLOAD_BYTES"),
                "415": _err("neither multipart/form-data nor text/csv"),
                "431": _err("a multipart part's headers exceed IMPORTD_MAX_PART_HEADER_BYTES (all its lines "
                            "together, or one line) or 8 lines (code part_headers_too_large)"),
                "503": _err("the job could not be queued; its Idempotency-Key is released, so a retry with "
                            "the same key can succeed"), **UNAUTHORIZED}}},
        "/api/uploads": {"post": {
            "summary": "start a presigned multipart upload straight to the S3 store (parts PUT by the client)",
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["size"], "properties": {"size": {"type": "integer", "minimum": 1}}}}}},
            "responses": {
                "201": _json("the upload id (the future job id), part size and one presigned PUT URL per part",
                             PRESIGNED),
                "400": _err("size missing or not a positive integer"),
                "409": _err("the upload store is a directory (code no_presigned_uploads)"),
                "413": _err("larger than IMPORTD_MAX_UPLOAD_BYTES"),
                "503": _err("the upload store cannot be reached"), **UNAUTHORIZED}}},
        "/api/uploads/{upload_id}": {"get": {
            "summary": "parts received, and fresh URLs for the missing ones (given size)",
            "security": [{"bearer": []}],
            "parameters": [UPLOAD_ID_PARAM, {"name": "size", "in": "query", "schema": {"type": "integer"}}],
            "responses": {
                "200": _json("received and missing parts", {"type": "object", "required": ["received", "missing"]}),
                "400": _err("size not a positive integer"), "404": _err("no such upload in progress"),
                "409": _err("the upload store is a directory (code no_presigned_uploads)"),
                "413": _err("larger than IMPORTD_MAX_UPLOAD_BYTES"),
                "503": _err("the upload store cannot be reached"), **UNAUTHORIZED}}},
        "/api/uploads/{upload_id}/complete": {"post": {
            "summary": "check parts, size and sha256, complete the upload and queue the import",
            "security": [{"bearer": []}], "parameters": [UPLOAD_ID_PARAM],
            "requestBody": {"required": True, "content": {"application/json": {"schema": COMPLETE}}},
            "responses": {
                "202": _json("job created (or the job of this upload, completed before)",
                             {"$ref": "#/components/schemas/Accepted"}),
                "400": _err("bad options, parts missing (upload_incomplete, with missing), size or sha256 "
                            "differ (checksum_mismatch: the object is deleted), or a header that does not fit"),
                "404": _err("no such upload"), "409": _err("the upload store is a directory"),
                "413": _err("larger than IMPORTD_MAX_UPLOAD_BYTES"),
                "503": _err("the store, or the broker, cannot be reached"), **UNAUTHORIZED}}},
        "/api/tables": {"get": {
            "summary": "tables uploads may target (IMPORTD_TABLES)", "security": [{"bearer": []}],
            "responses": {"200": _json("the allowlist", {
                "type": "object", "required": ["tables"],
                "properties": {"tables": {"type": "array", "items": {"type": "string"}}}}), **UNAUTHORIZED}}},
        "/api/jobs": {"get": {
            "summary": "jobs, newest first", "security": [{"bearer": []}],
            "parameters": [
                {"name": "state", "in": "query", "schema": STATE},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
            "responses": {
                "200": _json("one page", {"type": "object", "required": ["jobs", "next_cursor"], "properties": {
                    "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
                    "next_cursor": _nullable_str}}),
                "400": _err("bad state, limit or cursor"), **UNAUTHORIZED}}},
        "/api/jobs/{job_id}": {"get": {
            "summary": "job status (Redis first, PostgreSQL when Redis expired or is down; a non-terminal "
                       "Redis state is checked against PostgreSQL, whose state wins)",
            "security": [{"bearer": []}], "parameters": [JOB_ID_PARAM],
            "responses": {"200": _json("the job", {"$ref": "#/components/schemas/Job"}),
                          "404": _err("no such job"), **UNAUTHORIZED}}},
        "/api/jobs/{job_id}/errors": {"get": {
            "summary": "rejected rows as CSV", "security": [{"bearer": []}], "parameters": [JOB_ID_PARAM],
            "responses": {"200": {"description": "line_number,column,value,reason",
                                  "content": {"text/csv": {"schema": {"type": "string"}}}},
                          "404": _err("no such job"), **UNAUTHORIZED}}},
        "/api/jobs/{job_id}/cancel": {"post": {
            "summary": "cancel a queued job, or ask a running one to stop", "security": [{"bearer": []}],
            "parameters": [JOB_ID_PARAM],
            "responses": {"200": _json("cancelled", {"$ref": "#/components/schemas/Job"}),
                          "202": _json("stop requested; the job stops between batches",
                                       {"$ref": "#/components/schemas/Job"}),
                          "404": _err("no such job"), "409": _err("the job already ended"), **UNAUTHORIZED}}},
        "/api/jobs/{job_id}/events": {"get": {
            "summary": "progress as Server-Sent Events (id per event, Last-Event-ID resume, final event)",
            "security": [{"bearer": []}],
            "parameters": [JOB_ID_PARAM, {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "text/event-stream",
                                  "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                          "400": _err("Last-Event-ID is not an event id"), "404": _err("no such job"),
                          "429": {**_err("IMPORTD_SSE_MAX_CLIENTS streams are open in this API process "
                                         "(code too_many_streams)"),
                                  "headers": {"Retry-After": {"schema": {"type": "integer"},
                                                              "description": "seconds to wait"}}},
                          **UNAUTHORIZED}}},
        "/api/session": {"post": {
            "summary": "trade the bearer token for the page's session cookie", "security": [{"bearer": []}],
            "responses": {"200": _json("cookie set (auth true) or not needed (auth false)",
                                       {"type": "object", "required": ["auth"]}), **UNAUTHORIZED}},
            "delete": {"summary": "drop the session cookie", "security": [{"bearer": []}],
                       "responses": {"204": {"description": "cookie cleared"}, **UNAUTHORIZED}}},
    },
}


async def schema(request: Request) -> Response:
    return JSONResponse(SCHEMA)
