"""The dead-letter queue for operators: what ``failed_tasks`` holds and why, and replay of
chosen jobs, through :mod:`importd.ops.dlq` (the code of ``importd replay-dlq`` itself).

Like every ``/api`` route these need the bearer token when tokens are configured (else a
loopback client); a replay is a POST, so the page's read-only session cookie cannot do it.
"""

from __future__ import annotations

from typing import Any

from kombu.exceptions import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.errors import ApiError
from api.services import services
from importd.config import Settings
from importd.ops import dlq
from importd.worker.messages import JOB_ID

#: Dead letters listed at most per request; jobs replayed at most per request.
MAX_LISTED = 500
MAX_REPLAY = 500


def _listing(settings: Settings, limit: int) -> list[dict[str, Any]]:
    return [dead.as_dict() for dead, _ in dlq.replay(settings, dlq.Filter(), limit=limit, dry_run=True)]


def _replay(settings: Settings, job_ids: list[str]) -> list[dict[str, Any]]:
    flt = dlq.Filter(jobs=frozenset(job_ids))
    return [{**dead.as_dict(), "outcome": outcome} for dead, outcome in dlq.replay(settings, flt)]


async def list_dead_letters(request: Request) -> Response:
    svc = services(request)
    raw = request.query_params.get("limit") or "100"
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(400, "bad_request", "limit must be an integer") from None
    if not 1 <= limit <= MAX_LISTED:
        raise ApiError(400, "bad_request", f"limit must be between 1 and {MAX_LISTED}")
    try:
        listed = await run_in_threadpool(_listing, svc.settings, limit)
    except (OSError, OperationalError) as exc:
        raise ApiError(503, "broker_unavailable", f"RabbitMQ cannot be reached: {exc}") from None
    return JSONResponse({"dead_letters": listed})


async def replay_dead_letters(request: Request) -> Response:
    """Body ``{"job_ids": [...]}``: those jobs' dead letters go back where they came from."""
    svc = services(request)
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "bad_request", "the body must be JSON") from None
    ids = body.get("job_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not ids or len(ids) > MAX_REPLAY \
            or not all(isinstance(i, str) and JOB_ID.match(i) for i in ids):
        raise ApiError(400, "bad_request", f"job_ids must be a list of 1 to {MAX_REPLAY} job ids")
    try:
        done = await run_in_threadpool(_replay, svc.settings, ids)
    except (OSError, OperationalError) as exc:
        raise ApiError(503, "broker_unavailable", f"RabbitMQ cannot be reached: {exc}") from None
    return JSONResponse({"replayed": done})
