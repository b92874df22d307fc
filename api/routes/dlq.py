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

from api import bodies
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
    return JSONResponse({"dead_letters": await _on_broker(_listing, svc.settings, limit)})


async def replay_dead_letters(request: Request) -> Response:
    """Body ``{"job_ids": [...]}``: those jobs' dead letters go back where they came from;
    ``not_found`` names the ids the DLQ did not hold (already replayed, never there)."""
    svc = services(request)
    ids = (await bodies.json_object(request)).get("job_ids")
    if not isinstance(ids, list) or not ids or len(ids) > MAX_REPLAY \
            or not all(isinstance(i, str) and JOB_ID.match(i) for i in ids):
        raise ApiError(400, "bad_request", f"job_ids must be a list of 1 to {MAX_REPLAY} job ids")
    replayed = await _on_broker(_replay, svc.settings, ids)
    seen = {d["job_id"] for d in replayed}
    return JSONResponse({"replayed": replayed, "not_found": [i for i in dict.fromkeys(ids) if i not in seen]})


async def _on_broker(func: Any, *args: Any) -> Any:
    """Run a blocking broker call off the event loop; a broker that cannot be reached is 503."""
    try:
        return await run_in_threadpool(func, *args)
    except (OSError, OperationalError) as exc:
        raise ApiError(503, "broker_unavailable", f"RabbitMQ cannot be reached: {exc}") from None
