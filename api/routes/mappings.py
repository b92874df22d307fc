"""``GET``/``PUT /api/mappings``: the column mappings users confirmed, per (table, header).

A mapping saved here is used by ``POST /api/preview`` for the next file with the same header
(case and surrounding spaces ignored), so the page maps it at once; it goes with each job as
the job's ``columns`` option, which is what the import applies.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import bodies
from api.errors import ApiError
from api.services import services
from importd.imports import mappings, targets

#: Longest header a saved mapping may have (columns).
MAX_HEADER_FIELDS = 1600


def _table(raw: Any, settings: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ApiError(400, "bad_request", "table is required")
    try:
        schema, table = targets.allowed(settings, raw)
    except targets.TargetError as exc:
        raise ApiError(400, "bad_request", "; ".join(exc.problems)) from None
    return f"{schema}.{table}"


async def list_mappings(request: Request) -> Response:
    svc = services(request)
    raw = request.query_params.get("table")
    table = _table(raw, svc.settings) if raw else None
    return JSONResponse({"mappings": await svc.with_db(mappings.list_saved, table)})


async def put_mapping(request: Request) -> Response:
    """Body ``{"table": ..., "header": [...], "columns": {header name: column or null}}`` (null:
    the field is ignored)."""
    svc = services(request)
    body = await bodies.json_object(request)
    table = _table(body.get("table"), svc.settings)
    header, columns = body.get("header"), body.get("columns")
    if not isinstance(header, list) or not header or len(header) > MAX_HEADER_FIELDS \
            or not all(isinstance(h, str) for h in header):
        raise ApiError(400, "bad_request", "header must be a non-empty list of the file's column names")
    if not isinstance(columns, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str))
                                                for k, v in columns.items()):
        raise ApiError(400, "bad_request", "columns must map header names to column names (or null to ignore)")
    if any("\x00" in text for text in [*header, *columns, *(v for v in columns.values() if v)]):
        raise ApiError(400, "bad_request", "names cannot contain NUL")
    try:
        saved = await svc.with_db(_save, svc.settings, table, header, columns)
    except targets.TargetError as exc:
        raise ApiError(400, "bad_mapping", "; ".join(exc.problems), problems=exc.problems) from None
    return JSONResponse(saved)


def _save(conn: Any, settings: Any, table: str, header: list[str],
          columns: dict[str, str | None]) -> dict[str, Any]:
    """Save the mapping once the table's catalog says it can be applied (TargetError otherwise)."""
    target = targets.load(conn, settings, table)
    problems = mappings.check(target, header, columns)
    if problems:
        raise targets.TargetError(problems)
    return mappings.save(conn, target.name, header, columns)
