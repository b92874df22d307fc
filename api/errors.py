"""One JSON error shape for every failure: ``{"error": {"code": ..., "message": ...}}``.

Clients branch on ``code`` (stable, snake_case); ``message`` is for people. A crash answers
500 ``internal_error`` and is logged with its traceback; the traceback never reaches the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from importd import logs

log = logs.get("api.errors")


class ApiError(Exception):
    """An error the API answers on purpose; ``details`` are added to the error object."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None,
                 **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.details = details


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None,
                   **details: Any) -> JSONResponse:
    body = {"error": {"code": code, "message": message, **details}}
    return JSONResponse(body, status_code=status, headers=headers)


def _code_for(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, headers=exc.headers, **exc.details)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (404 unknown route, 405 wrong method) in our shape."""
    assert isinstance(exc, HTTPException)
    message = exc.detail if isinstance(exc.detail, str) else _code_for(exc.status_code)
    return error_response(exc.status_code, _code_for(exc.status_code), message, headers=exc.headers)


async def database_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("postgresql unavailable", path=request.url.path, error=str(exc)[:200])
    return error_response(503, "database_unavailable", "PostgreSQL cannot be reached; try again")


async def internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", path=request.url.path, method=request.method, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


HANDLERS: dict[Any, Any] = {
    ApiError: api_error,
    HTTPException: http_error,
    psycopg.OperationalError: database_unavailable,
    PoolTimeout: database_unavailable,
    Exception: internal_error,
}
