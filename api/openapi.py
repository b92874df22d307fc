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
#: A value of a ``columns`` mapping: the table column of a header field, or null to ignore the field.
COLUMN_OR_IGNORE = {"type": "string", "nullable": True,
                    "description": "table column of this header field; null: the field is ignored (read and dropped)"}

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
        "rejects": {"type": "object", "nullable": True,
                    "description": "once ended: every rejected record counted, grouped by (column, reason)",
                    "properties": {"records": {"type": "integer"}, "file": {"type": "string"},
                                   "groups": {"type": "array", "items": {"type": "object", "properties": {
                                       "column": _nullable_str, "reason": {"type": "string"},
                                       "count": {"type": "integer"},
                                       "lines": {"type": "array", "items": {"type": "integer"}}}}}}},
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
    {"name": "columns", "in": "query", "schema": {"type": "string"},
     "description": "JSON object: header name -> column, or null to ignore that field (the job's "
                    "columns option)"},
    {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 200}},
]
UPLOAD_FORM = {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary"}, "table": {"type": "string"},
                   "priority": {"type": "integer", "minimum": 0, "maximum": 10},
                   "mode": {"type": "string", "enum": ["atomic", "resumable"]},
                   "max_errors": {"type": "integer", "minimum": 0}, "validate_only": {"type": "boolean"}},
}

PREVIEW = {
    "type": "object",
    "required": ["table", "delimiter", "encoding", "header", "mapping", "problems", "rows", "bytes_read", "complete"],
    "properties": {
        "table": {"type": "string"}, "delimiter": {"type": "string"}, "encoding": {"type": "string"},
        "encoding_detected": {"type": "boolean"},
        "header": {"type": "array", "items": {"type": "string"}},
        "mapping": {"type": "object", "required": ["fields", "missing", "columns"], "properties": {
            "fields": {"type": "array", "items": {"type": "object", "properties": {
                "header": {"type": "string"}, "column": _nullable_str,
                "how": {"type": "string", "enum": ["explicit", "auto", "suggested", "none"]},
                "ignored": {"type": "boolean", "description": "mapped (or suggested) to null: read and dropped"}}}},
            "missing": {"type": "array", "items": {"type": "object", "properties": {
                "column": {"type": "string"}, "type": {"type": "string"}, "required": {"type": "boolean"}}}},
            "columns": {"type": "object", "additionalProperties": COLUMN_OR_IGNORE}}},
        "mapping_source": {"type": "string", "nullable": True, "enum": ["request", "saved", None]},
        "problems": {"type": "array", "items": {"type": "string"}},
        "notes": {"type": "array", "items": {"type": "string"},
                  "description": "what the preview could not show (a record longer than the head it reads)"},
        "rows": {"type": "array", "items": {"type": "object", "required": ["line", "cells"], "properties": {
            "line": {"type": "integer"}, "error": _nullable_str,
            "cells": {"type": "array", "items": {"type": "object", "properties": {
                "value": _nullable_str, "quoted": {"type": "boolean"}, "error": _nullable_str}}}}}},
        "rows_shown": {"type": "integer"}, "bad_rows": {"type": "integer"}, "bad_cells": {"type": "integer"},
        "bytes_read": {"type": "integer"}, "complete": {"type": "boolean"},
        "columns": {"type": "array", "items": {"type": "object"}},
    },
}
MAPPING = {
    "type": "object", "required": ["table", "header", "columns"],
    "properties": {"table": {"type": "string"}, "header": {"type": "array", "items": {"type": "string"}},
                   "columns": {"type": "object", "additionalProperties": COLUMN_OR_IGNORE},
                   "updated_at": {"type": "string"}},
}
DEAD_LETTER: dict[str, Any] = {
    "type": "object", "required": ["job_id", "task", "reason"],
    "properties": {"job_id": {"type": "string"}, "task": {"type": "string"}, "reason": {"type": "string"},
                   "attempts": {"type": "integer"}, "died_at": _nullable_str, "error": {"type": "string"},
                   "exchange": _nullable_str, "routing_key": _nullable_str, "queue": {"type": "string"}},
}
PREVIEW_QUERY = [
    {"name": "table", "in": "query", "schema": {"type": "string"},
     "description": "target table (allowlisted); a job's own table with job_id"},
    {"name": "delimiter", "in": "query", "schema": {"type": "string"}},
    {"name": "encoding", "in": "query", "schema": {"type": "string"}},
    {"name": "columns", "in": "query", "schema": {"type": "string"},
     "description": "JSON object: header name -> column, or null to ignore that field (else the saved "
                    "mapping, else the automatic one)"},
    {"name": "rows", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
    {"name": "job_id", "in": "query", "schema": {"type": "string"},
     "description": "preview this job's stored file instead of a body"},
]
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
    "properties": {"size": {"type": "integer", "minimum": 1},
                   "sha256": {"type": "string", "description": "hex sha256 of the whole file"},
                   "composite_sha256": {"type": "string", "description":
                                        "hex sha256 of the parts' binary sha256 digests concatenated in order "
                                        "(parts of part_bytes, the last shorter): what a browser can compute"},
                   "table": {"type": "string"}, "priority": {"type": "integer", "minimum": 0, "maximum": 10},
                   "mode": {"type": "string", "enum": ["atomic", "resumable"]},
                   "max_errors": {"type": "integer", "minimum": 0}, "validate_only": {"type": "boolean"},
                   "delimiter": {"type": "string"}, "encoding": {"type": "string"},
                   "columns": {"type": "string",
                               "description": "JSON object: header name -> column, or null to ignore that field"}},
}

SCHEMA: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "importd", "version": "0.1.0",
             "description": "CSV uploads into PostgreSQL through RabbitMQ, progress over SSE."},
    "components": {
        "schemas": {"Error": ERROR, "Job": JOB, "Accepted": ACCEPTED, "Preview": PREVIEW, "Mapping": MAPPING},
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
                "202": _json("job created (or, for the same request again under its Idempotency-Key, that "
                             "key's job, with Idempotent-Replayed: true)", {"$ref": "#/components/schemas/Accepted"}),
                "400": _err("bad options, malformed body, or a CSV header that cannot be read or does not "
                            "fit the table (code bad_upload, every problem in problems)"),
                "413": _err("larger than IMPORTD_MAX_UPLOAD_BYTES"),
                "415": _err("neither multipart/form-data nor text/csv"),
                "422": _err("the Idempotency-Key names a job of another request (another file, table, mode, "
                            "priority or options): code idempotency_key_reused, the job in job_id"),
                "431": _err("a multipart part's headers exceed IMPORTD_MAX_PART_HEADER_BYTES (all its lines "
                            "together, or one line) or 8 lines (code part_headers_too_large)"),
                "503": _err("the job could not be queued; its Idempotency-Key is released, so a retry with "
                            "the same key can succeed"), **UNAUTHORIZED}}},
        "/api/preview": {"post": {
            "summary": "the file's first records mapped to the table and checked cell by cell; nothing is "
                       "stored or queued, and only the first MiB of the file is read",
            "security": [{"bearer": []}], "parameters": PREVIEW_QUERY,
            "requestBody": {"required": False, "content": {
                "multipart/form-data": {"schema": {"type": "object", "properties": {
                    "file": {"type": "string", "format": "binary"}, "table": {"type": "string"},
                    "columns": {"type": "string"}, "rows": {"type": "integer"}}}},
                "text/csv": {"schema": {"type": "string"}}}},
            "responses": {
                "200": _json("the preview", {"$ref": "#/components/schemas/Preview"}),
                "400": _err("bad options, malformed body, a head that is not CSV, or a table that cannot be used"),
                "404": _err("job_id names no job, or its file is gone"),
                "413": _err("a raw body declared larger than IMPORTD_MAX_UPLOAD_BYTES, or a multipart file "
                            "part past it (the upload would refuse it)"),
                "415": _err("neither multipart/form-data nor text/csv"),
                "431": _err("a multipart part's headers are too large"), **UNAUTHORIZED}}},
        "/api/mappings": {
            "get": {"summary": "saved column mappings, newest first", "security": [{"bearer": []}],
                    "parameters": [{"name": "table", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": _json("the mappings", {
                        "type": "object", "required": ["mappings"],
                        "properties": {"mappings": {"type": "array",
                                                    "items": {"$ref": "#/components/schemas/Mapping"}}}}),
                        "400": _err("table not on the allowlist"), **UNAUTHORIZED}},
            "put": {"summary": "save the mapping of a header into a table (used by the next preview)",
                    "security": [{"bearer": []}],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["table", "header", "columns"],
                        "properties": {"table": {"type": "string"},
                                       "header": {"type": "array", "items": {"type": "string"}},
                                       "columns": {"type": "object", "additionalProperties": COLUMN_OR_IGNORE}}}}}},
                    "responses": {"200": _json("saved", {"$ref": "#/components/schemas/Mapping"}),
                                  "400": _err("bad body or table; bad_mapping (with problems) for a mapping "
                                              "the import could not apply: a column the table lacks or "
                                              "generates, one column for two header fields"),
                                  "413": _err("a JSON body past 1 MiB"), **UNAUTHORIZED}}},
        "/api/dlq": {"get": {
            "summary": "what the dead-letter queue (failed_tasks) holds and why, oldest first",
            "security": [{"bearer": []}],
            "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                       "maximum": 500}}],
            "responses": {"200": _json("the dead letters", {
                "type": "object", "required": ["dead_letters"],
                "properties": {"dead_letters": {"type": "array", "items": DEAD_LETTER}}}),
                "400": _err("bad limit"), "503": _err("RabbitMQ cannot be reached"), **UNAUTHORIZED}}},
        "/api/dlq/replay": {"post": {
            "summary": "replay the named jobs' dead letters (importd replay-dlq --job ...)",
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["job_ids"],
                "properties": {"job_ids": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                                           "maxItems": 500}}}}}},
            "responses": {"200": _json("what happened to each", {
                "type": "object", "required": ["replayed", "not_found"],
                "properties": {"replayed": {"type": "array", "items": {
                    **DEAD_LETTER, "properties": {**DEAD_LETTER["properties"], "outcome": {"type": "string"}}}},
                    "not_found": {"type": "array", "items": {"type": "string"},
                                  "description": "ids the DLQ did not hold"}}}),
                "400": _err("bad body"), "413": _err("a JSON body past 1 MiB"),
                "503": _err("RabbitMQ cannot be reached"), **UNAUTHORIZED}}},
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
                "503": _err("the upload store cannot be reached"), **UNAUTHORIZED}},
            "delete": {
                "summary": "abort an upload the client gives up on: the parts it sent leave the store",
                "security": [{"bearer": []}], "parameters": [UPLOAD_ID_PARAM],
                "responses": {
                    "204": {"description": "aborted"}, "404": _err("no such upload in progress"),
                    "409": _err("the upload store is a directory (code no_presigned_uploads)"),
                    "503": _err("the upload store cannot be reached"), **UNAUTHORIZED}}},
        "/api/uploads/{upload_id}/complete": {"post": {
            "summary": "check parts, size and checksums, complete the upload and queue the import",
            "security": [{"bearer": []}], "parameters": [UPLOAD_ID_PARAM],
            "requestBody": {"required": True, "content": {"application/json": {"schema": COMPLETE}}},
            "responses": {
                "202": _json("job created (or the job of this upload, completed before)",
                             {"$ref": "#/components/schemas/Accepted"}),
                "400": _err("bad options, parts missing (upload_incomplete, with missing), size, sha256 or "
                            "composite_sha256 differ (checksum_mismatch: the object is deleted), or a header "
                            "that does not fit"),
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
                {"name": "table", "in": "query", "schema": {"type": "string"},
                 "description": "only jobs into this table (as the job names it)"},
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
        "/api/jobs/{job_id}/rejects.csv": {"get": {
            "summary": "every rejected record as the original CSV lines, under the upload's header: fix, "
                       "then upload this file to the same table", "security": [{"bearer": []}],
            "parameters": [JOB_ID_PARAM],
            "responses": {"200": {"description": "the header, then each rejected record's bytes",
                                  "content": {"text/csv": {"schema": {"type": "string"}}}},
                          "404": _err("no such job, or no reject file: the job has not ended, rejected nothing, "
                                              "or retention removed the file"), **UNAUTHORIZED}}},
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
