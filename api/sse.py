"""``GET /api/jobs/{id}/events``: the job's Redis stream as Server-Sent Events.

One event per stream entry with its id, so ``Last-Event-ID`` resumes without loss or repeat;
a keepalive comment every ``IMPORTD_SSE_KEEPALIVE_S`` that also checks the job in PostgreSQL,
so a stream ends with ``final`` within one keepalive of the job's end even when Redis lost it.
Each client holds its own Redis connection, freed as soon as the client goes.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import psycopg
import redis.asyncio as aioredis
import redis.exceptions
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from api.errors import ApiError
from api.routes.jobs import FINAL_STATES, job_id_of, load_record, reopened
from api.services import Services, redis_client, services
from importd import keys, logs
from importd.config import Settings

log = logs.get("api.sse")

#: A Redis stream id as Last-Event-ID ("0" means from the start).
EVENT_ID = re.compile(r"^\d{1,20}(-\d{1,20})?$")
#: Events read per XREAD.
BATCH = 100
#: Milliseconds the browser waits before reconnecting (sent as ``retry:``).
RETRY_MS = 2000
#: Seconds a client refused for too many streams is asked to wait (``Retry-After``).
RETRY_AFTER_S = 5
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


class EventStreamResponse(StreamingResponse):
    """A streaming response that always watches for the client's disconnect and cancels.

    ``cleanup`` runs (shielded) however the response ends, even if the body never started.
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], cleanup: Callable[[], Awaitable[None]],
                 headers: dict[str, str]) -> None:
        super().__init__(content, headers=headers)
        self.cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as tg:
                async def stream_then_stop() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:
                        pass  # the client went away mid-send
                    tg.cancel_scope.cancel()

                tg.start_soon(stream_then_stop)
                await self.listen_for_disconnect(receive)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self.body_iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
                await self.cleanup()


def format_event(event_id: str | None, data: dict[str, Any]) -> str:
    lines = [] if event_id is None else [f"id: {event_id}"]
    lines.append(f"event: {data.get('type', 'message')}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


async def _ended_in_database(svc: Services, job_id: str) -> dict[str, Any] | None:
    """A final event made from the PostgreSQL row, or None while the job has not ended."""
    try:
        rec = await load_record(svc, job_id)
    except (ApiError, psycopg.Error, PoolTimeout):
        return None  # unknown or PostgreSQL down: keep the stream open, ask again next keepalive
    if rec.state not in FINAL_STATES:
        return None
    return {"type": "final", "state": rec.state, "rows": str(rec.rows_imported),
            "rejected": str(rec.rows_rejected), "error": rec.error or "", "source": "database"}


async def _reopened(svc: Services, job_id: str) -> bool:
    """Whether PostgreSQL says a replay reopened the job and it runs (a ``final`` in its stream
    is then stale: the worker's restart of the stream was lost). False when PostgreSQL cannot
    say: the stream's ``final`` stands."""
    try:
        rec = await load_record(svc, job_id)
    except (ApiError, psycopg.Error, PoolTimeout):
        return False
    return reopened(rec)


def stream_client(settings: Settings) -> aioredis.Redis:
    """The stream's own connection: blocking XREAD needs one per client."""
    return redis_client(settings, socket_timeout=settings.sse_keepalive_s + 5, single_connection_client=True,
                        client_name=f"{settings.redis_prefix}:sse")


async def _job_known(svc: Services, client: aioredis.Redis, job_id: str) -> bool:
    try:
        if await client.exists(keys.job_state(svc.settings.redis_prefix, job_id)):
            return True
    except (redis.exceptions.RedisError, OSError):
        pass
    await load_record(svc, job_id)  # raises 404 for a job that does not exist
    return True


async def _stream_exists(client: aioredis.Redis, key: str) -> bool:
    try:
        return bool(await client.exists(key))
    except (redis.exceptions.RedisError, OSError):
        return False


async def event_stream(svc: Services, client: aioredis.Redis, job_id: str, after: str) -> AsyncIterator[str]:
    """Events after ``after`` read through ``client`` (closed by the response, not here)."""
    settings = svc.settings
    key = keys.job_events(settings.redis_prefix, job_id)
    block_ms = max(1, int(settings.sse_keepalive_s * 1000))
    yield f"retry: {RETRY_MS}\n\n"
    check_db = after == "0" and not await _stream_exists(client, key)
    while True:
        if check_db:
            check_db = False
            final = await _ended_in_database(svc, job_id)
            if final is not None:
                yield format_event(None, final)
                return
        try:
            result: Any = await client.xread({key: after}, count=BATCH, block=block_ms)
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("redis unavailable for SSE", job_id=job_id, error=str(exc)[:200])
            await anyio.sleep(settings.sse_keepalive_s)
            result = None
        if not result:
            yield ": keepalive\n\n"
            check_db = True
            continue
        for _stream, entries in result:
            for event_id, data in entries:
                after = event_id
                if data.get("type") == "final" and await _reopened(svc, job_id):
                    continue  # a life the job left: a replay runs it again (issue 12 items 3, 7)
                yield format_event(event_id, data)
                if data.get("type") == "final":
                    return


async def job_events(request: Request) -> Response:
    """The stream; 429 once ``IMPORTD_SSE_MAX_CLIENTS`` streams are open in this process (each
    holds a Redis connection, so their number is bounded like any other pool)."""
    svc = services(request)
    job_id = job_id_of(request)
    after = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or "0"
    if not EVENT_ID.match(after):
        raise ApiError(400, "bad_last_event_id", "Last-Event-ID must be an event id this stream sent")
    if not svc.take_sse_slot():
        raise ApiError(429, "too_many_streams",
                       f"this server already serves {svc.settings.sse_max_clients} event streams; retry later",
                       headers={"Retry-After": str(RETRY_AFTER_S)}, limit=svc.settings.sse_max_clients)
    client = stream_client(svc.settings)

    async def cleanup() -> None:
        try:
            await client.aclose()
        finally:
            svc.release_sse_slot()

    try:
        await _job_known(svc, client, job_id)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await cleanup()
        raise
    return EventStreamResponse(event_stream(svc, client, job_id, after), cleanup=cleanup, headers=HEADERS)


