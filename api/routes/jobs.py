"""Job status, job list, error report and cancel."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import psycopg
import redis.exceptions
from psycopg_pool import PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import views
from api.errors import ApiError
from api.services import Services, services
from importd import keys, logs
from importd.imports import rejectfile, store
from importd.worker.messages import JOB_ID

log = logs.get("api.jobs")

STATES = store.STATES
FINAL_STATES = store.FINAL_STATES
#: Largest page of the job list.
MAX_LIMIT = 1000
#: Seconds a status request waits for PostgreSQL when it only cross-checks Redis' answer.
CHECK_DB_TIMEOUT_S = 1.0


def job_id_of(request: Request) -> str:
    job_id = request.path_params["job_id"]
    if not JOB_ID.match(job_id):
        raise ApiError(404, "job_not_found", "no such job")
    return str(job_id)


async def load_record(svc: Services, job_id: str) -> store.JobRecord:
    rec = await svc.with_db(store.get_job, job_id)
    if rec is None:
        raise ApiError(404, "job_not_found", f"no job {job_id}")
    return rec


async def read_live(svc: Services, job_id: str) -> dict[str, str] | None:
    """The job's Redis hash; None when it expired or Redis is down (then PostgreSQL answers)."""
    try:
        data: Any = await svc.redis.hgetall(keys.job_state(svc.settings.redis_prefix, job_id))  # type: ignore[misc]
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("redis unavailable, answering from postgresql", job_id=job_id, error=str(exc)[:200])
        return None
    return dict(data) if data else None


async def read_durable(svc: Services, job_id: str) -> store.JobRecord | None:
    """The job's PostgreSQL row for a cross-check; None when there is none or PostgreSQL cannot
    answer within :data:`CHECK_DB_TIMEOUT_S` (then Redis' answer stands)."""
    def call() -> store.JobRecord | None:
        with svc.db.connection(timeout=CHECK_DB_TIMEOUT_S) as conn:
            return store.get_job(conn, job_id)
    try:
        return await run_in_threadpool(call)
    except (psycopg.Error, PoolTimeout) as exc:
        log.warning("postgresql unavailable, answering from redis", job_id=job_id, error=str(exc)[:200])
        return None


def reopened(rec: store.JobRecord) -> bool:
    """Whether a replay reopened the job and it has not ended again: a final state or event
    Redis holds for it is then from its last life (issue 12 items 3, 7)."""
    return rec.state not in FINAL_STATES and bool(rec.history)


async def repair_live(svc: Services, rec: store.JobRecord) -> None:
    """Write the terminal state PostgreSQL holds into Redis (best effort; see Progress.reconcile)."""
    written = await run_in_threadpool(svc.progress.reconcile, rec.id, rec.state, rows=rec.rows_imported,
                                      rejected=rec.rows_rejected, error=rec.error or "", table=rec.target_table,
                                      finished_at=rec.finished_at.isoformat() if rec.finished_at else None)
    if written:
        log.info("redis behind postgresql, final state repaired", job_id=rec.id, state=rec.state)


async def get_job(request: Request) -> Response:
    """The job; once it ended, with its rejects grouped by (column, reason) (``rejects``)."""
    response = await _get_job(request)
    view = json.loads(bytes(response.body))
    if view.get("state") in FINAL_STATES:
        view["rejects"] = await reject_summary(services(request), view["id"])
        return JSONResponse(view)
    return response


async def reject_summary(svc: Services, job_id: str) -> dict[str, Any] | None:
    """The job's rejects for its JSON: count, groups by (column, reason), the file's URL; None
    before it ran."""
    found = await svc.with_db(rejectfile.summary, job_id)
    if found is None:
        return None
    return {"records": found["records"], "groups": found["groups"], "file": f"/api/jobs/{job_id}/rejects.csv"}


async def _get_job(request: Request) -> JSONResponse:
    """Redis first (live counts); its state is checked against PostgreSQL, whose state wins:
    it is written first, so Redis can only lag behind it (a final write lost to a Redis stall
    would otherwise say STARTED for a day; a stale final state, FAILURE for a job a replay
    runs again)."""
    svc = services(request)
    job_id = job_id_of(request)
    live = await read_live(svc, job_id)
    if live is None or not live.get("state"):
        return JSONResponse(views.from_record(await load_record(svc, job_id)))
    view = views.from_redis(job_id, live)
    rec = await read_durable(svc, job_id)
    if rec is None:
        return JSONResponse(view)
    if live["state"] in FINAL_STATES:
        # A final state PostgreSQL does not hold, of a job a replay reopened, is a life it left
        # (the worker's restart of its Redis record was lost): PostgreSQL's row answers.
        return JSONResponse(views.from_record(rec) if rec.history and rec.state != live["state"] else view)
    if rec.state in FINAL_STATES:
        await repair_live(svc, rec)
        return JSONResponse(views.from_record(rec))
    view["state"] = rec.state
    return JSONResponse(view)


async def list_tables(request: Request) -> Response:
    """The allowlisted tables (``IMPORTD_TABLES``), for the page's table picker."""
    return JSONResponse({"tables": services(request).settings.table_list})


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return 50
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(400, "bad_request", "limit must be an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, "bad_request", f"limit must be between 1 and {MAX_LIMIT}")
    return limit


async def list_jobs(request: Request) -> Response:
    svc = services(request)
    state = request.query_params.get("state") or None
    if state is not None and state not in STATES:
        raise ApiError(400, "bad_request", f"state must be one of {', '.join(STATES)}")
    limit = _limit(request.query_params.get("limit"))
    cursor = request.query_params.get("cursor") or None
    table = request.query_params.get("table") or None
    if table is not None and "\x00" in table:
        raise ApiError(400, "bad_request", "table cannot contain NUL")
    try:
        records, next_cursor = await svc.with_db(store.list_jobs, state=state, limit=limit, cursor=cursor,
                                                 table=table)
    except ValueError:
        raise ApiError(400, "bad_cursor", "cursor is not one this API returned") from None
    return JSONResponse({"jobs": [views.from_record(r) for r in records], "next_cursor": next_cursor})


def _errors_csv(svc: Services, job_id: str) -> str | None:
    with svc.db.connection(timeout=10) as conn:
        if store.get_job(conn, job_id) is None:
            return None
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["line_number", "column", "value", "reason"])
        writer.writerows(store.iter_rejected_rows(conn, job_id))
        return out.getvalue()


async def job_errors(request: Request) -> Response:
    """The rejected rows as CSV (the store keeps at most a bounded number per job)."""
    svc = services(request)
    job_id = job_id_of(request)
    body = await run_in_threadpool(_errors_csv, svc, job_id)
    if body is None:
        raise ApiError(404, "job_not_found", f"no job {job_id}")
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{job_id}-errors.csv"'})


async def cancel_job(request: Request) -> Response:
    """A queued job is cancelled at once (the worker skips it); a running one is asked to stop
    between batches. 409 for a job that already ended."""
    svc = services(request)
    job_id = job_id_of(request)
    before = await load_record(svc, job_id)
    if before.state in FINAL_STATES:
        raise ApiError(409, "job_finished", f"job {job_id} already ended: {before.state}", state=before.state)
    rec = await svc.with_db(store.request_cancel, job_id)
    if rec is None:
        raise ApiError(404, "job_not_found", f"no job {job_id}")
    if rec.state == "CANCELLED":
        await run_in_threadpool(svc.progress.set_state, job_id, "CANCELLED", error="cancelled")
    body = views.from_record(rec)
    return JSONResponse(body, status_code=200 if rec.state == "CANCELLED" else 202)
