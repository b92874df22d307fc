"""``/healthz`` (the process answers) and ``/readyz`` (every backing service answers)."""

from __future__ import annotations

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.errors import error_response
from api.services import Services, services
from importd import logs
from importd.worker.publisher import broker_connection

log = logs.get("api.health")

#: Seconds each readiness probe may take.
PROBE_TIMEOUT_S = 3.0


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _probe_rabbitmq(svc: Services) -> None:
    conn = broker_connection(svc.settings, heartbeat=0)
    conn.connect_timeout = PROBE_TIMEOUT_S  # type: ignore[assignment]
    try:
        conn.connect()
    finally:
        conn.release()


def _probe_postgresql(svc: Services) -> None:
    with svc.db.connection(timeout=PROBE_TIMEOUT_S) as conn:
        conn.execute("SELECT 1")


async def _probe_redis(svc: Services) -> None:
    await svc.redis.ping()


async def readyz(request: Request) -> Response:
    """200 when RabbitMQ, PostgreSQL and Redis all answer; 503 naming each one that does not."""
    svc = services(request)
    checks: dict[str, str] = {}

    async def run(name: str, probe: object) -> None:
        try:
            with anyio.fail_after(PROBE_TIMEOUT_S + 1):
                if name == "redis":
                    await _probe_redis(svc)
                else:
                    await run_in_threadpool(probe, svc)  # type: ignore[arg-type]
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
            # details go to the log only: /readyz answers without auth
            log.warning("readiness probe failed", service=name, error=f"{type(exc).__name__}: {str(exc)[:200]}")
            checks[name] = "unreachable"

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "rabbitmq", _probe_rabbitmq)
        tg.start_soon(run, "postgresql", _probe_postgresql)
        tg.start_soon(run, "redis", _probe_redis)
    down = sorted(name for name, result in checks.items() if result != "ok")
    if down:
        return error_response(503, "not_ready", f"cannot reach {', '.join(down)}", checks=checks)
    return JSONResponse({"status": "ready", "checks": checks})
