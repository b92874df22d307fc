"""Job status, list, error report and cancel on real PostgreSQL and Redis."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import pytest
import redis

from importd import keys
from importd.config import Settings
from importd.imports import store
from importd.imports.progress import Progress
from tests.support.importing import end_with_lost_final_write

pytestmark = pytest.mark.anyio


def make_job(settings: Settings, state: str = "PENDING", **fields: Any) -> store.JobRecord:
    with store.connect(settings) as conn:
        return store.create_job(conn, store.JobRecord(id=uuid.uuid4().hex, target_table="public.api_people",
                                                      state=state, **fields))


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, decode_responses=True)


async def test_job_status_comes_from_redis_while_it_has_the_job_then_from_postgresql(
        api_client: Any, api_settings: Settings) -> None:
    rec = make_job(api_settings, state="STARTED", rows_imported=5)
    progress = Progress(api_settings)
    progress.set_state(rec.id, "STARTED", table="public.api_people")
    progress.update(rec.id, rows=40, bytes=500, total_bytes=1000, rejected=1, force=True)
    async with api_client() as c:
        live = (await c.get(f"/api/jobs/{rec.id}")).json()
        r = redis_client(api_settings)
        r.delete(keys.job_state(api_settings.redis_prefix, rec.id))  # as if expired
        r.close()
        durable = (await c.get(f"/api/jobs/{rec.id}")).json()
    progress.close()
    assert (live["source"], live["state"], live["rows_imported"], live["rows_rejected"], live["percent"]) == (
        "redis", "STARTED", 40, 1, 50.0)
    assert live["links"]["events"] == f"/api/jobs/{rec.id}/events"
    assert (durable["source"], durable["state"], durable["rows_imported"]) == ("database", "STARTED", 5)
    assert durable["table"] == "public.api_people"


async def test_job_status_answers_from_postgresql_when_redis_is_down(api_client: Any, api_settings: Settings) -> None:
    rec = make_job(api_settings, state="SUCCESS", rows_imported=9)
    async with api_client(redis_url="redis://127.0.0.1:1/0") as c:
        r = await c.get(f"/api/jobs/{rec.id}")
    assert r.status_code == 200
    assert (r.json()["source"], r.json()["state"], r.json()["rows_imported"], r.json()["percent"]) == (
        "database", "SUCCESS", 9, 100.0)


async def test_unknown_or_malformed_job_ids_are_404(api_client: Any) -> None:
    async with api_client() as c:
        for path in ("/api/jobs/nope", "/api/jobs/..%2F..", "/api/jobs/nope/errors", "/api/jobs/nope/events"):
            r = await c.get(path)
            assert r.status_code == 404, path
            assert r.json()["error"]["code"] in ("job_not_found", "not_found")
        r = await c.post("/api/jobs/nope/cancel")
        assert r.status_code == 404


async def test_job_list_is_newest_first_filters_by_state_and_pages_with_a_cursor(
        api_client: Any, api_settings: Settings) -> None:
    made = [make_job(api_settings, state="RETRY") for _ in range(3)]
    async with api_client() as c:
        first = (await c.get("/api/jobs", params={"state": "RETRY", "limit": 2})).json()
        second = (await c.get("/api/jobs", params={"state": "RETRY", "limit": 2,
                                                   "cursor": first["next_cursor"]})).json()
    ids = [j["id"] for j in first["jobs"] + second["jobs"]]
    assert ids[:3] == [m.id for m in reversed(made)]
    assert all(j["state"] == "RETRY" for j in first["jobs"] + second["jobs"])
    assert first["next_cursor"]


@pytest.mark.parametrize("query", ["state=DONE", "limit=0", "limit=abc", "limit=1001", "cursor=%%%"])
async def test_job_list_rejects_a_bad_state_limit_or_cursor_with_400(api_client: Any, query: str) -> None:
    async with api_client() as c:
        r = await c.get(f"/api/jobs?{query}")
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] in ("bad_request", "bad_cursor")


async def test_error_report_is_the_rejected_rows_as_csv(api_client: Any, api_settings: Settings) -> None:
    rec = make_job(api_settings, state="SUCCESS", rows_rejected=2)
    with store.connect(api_settings) as conn:
        store.add_rejected_rows(conn, rec.id, [(3, "age", "-1", "violates check"), (7, None, 'a,"b', "ragged row")])
    async with api_client() as c:
        r = await c.get(f"/api/jobs/{rec.id}/errors")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(r.text))) == [
        ["line_number", "column", "value", "reason"], ["3", "age", "-1", "violates check"],
        ["7", "", 'a,"b', "ragged row"]]


async def test_cancel_of_a_queued_job_cancels_it_and_ends_its_event_stream(
        api_client: Any, api_settings: Settings) -> None:
    rec = make_job(api_settings, state="PENDING")
    async with api_client() as c:
        r = await c.post(f"/api/jobs/{rec.id}/cancel")
        again = await c.post(f"/api/jobs/{rec.id}/cancel")
        events = await c.get(f"/api/jobs/{rec.id}/events")
    assert r.status_code == 200 and r.json()["state"] == "CANCELLED"
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"
    assert "event: final" in events.text and '"state":"CANCELLED"' in events.text


async def test_cancel_of_a_running_job_asks_it_to_stop_with_202(api_client: Any, api_settings: Settings) -> None:
    rec = make_job(api_settings, state="STARTED")
    async with api_client() as c:
        r = await c.post(f"/api/jobs/{rec.id}/cancel")
    assert r.status_code == 202
    assert (r.json()["state"], r.json()["cancel_requested"]) == ("STARTED", True)
    with store.connect(api_settings) as conn:
        assert store.get_job(conn, rec.id).cancel_requested is True  # type: ignore[union-attr]


async def test_postgresql_unreachable_is_503_json(api_client: Any, monkeypatch: Any) -> None:
    from api import services

    monkeypatch.setattr(services, "DB_ACQUIRE_TIMEOUT_S", 1.0)
    async with api_client(database_url="postgresql://postgres@127.0.0.1:1/x") as c:
        r = await c.get("/api/jobs")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "database_unavailable"


async def test_the_session_cookie_can_be_dropped(api_client: Any) -> None:
    token = "t0ken"
    async with api_client(api_tokens=token) as c:
        await c.post("/api/session", headers={"Authorization": f"Bearer {token}"})
        assert (await c.get("/api/jobs/none")).status_code == 404
        r = await c.delete("/api/session", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 204
        assert (await c.get("/api/jobs/none")).status_code == 401


async def test_a_terminal_state_in_postgresql_wins_over_a_stale_redis_state_and_repairs_it(
        api_client: Any, api_settings: Settings) -> None:
    """Issue 12 item 7, status side: the worker's final Redis write was lost (Redis stalled),
    so Redis says STARTED; GET answers PostgreSQL's SUCCESS and writes it into Redis, whose
    stream then ends with ``final``."""
    rec = make_job(api_settings, state="STARTED")
    end_with_lost_final_write(api_settings, rec.id, "SUCCESS", rows=3)
    progress = Progress(api_settings)
    assert (progress.read(rec.id) or {}).get("state") == "STARTED"  # the stale hash
    async with api_client() as c:
        body = (await c.get(f"/api/jobs/{rec.id}")).json()
    assert (body["state"], body["rows_imported"], body["source"]) == ("SUCCESS", 3, "database")
    assert (progress.read(rec.id) or {}).get("state") == "SUCCESS"  # repaired
    assert progress.events(rec.id)[-1][1]["type"] == "final"
    progress.close()


async def test_a_state_postgresql_moved_past_wins_over_redis_but_live_counts_stay(
        api_client: Any, api_settings: Settings) -> None:
    """Issue 12 item 7: PostgreSQL leads every state change, so a Redis state it moved past
    (a RETRY write skipped during a Redis back-off) is answered with PostgreSQL's state."""
    rec = make_job(api_settings, state="RETRY")
    progress = Progress(api_settings)
    progress.set_state(rec.id, "STARTED")
    progress.update(rec.id, rows=7, bytes=1, total_bytes=10, force=True)
    progress.close()
    async with api_client() as c:
        body = (await c.get(f"/api/jobs/{rec.id}")).json()
    assert (body["state"], body["rows_imported"], body["source"]) == ("RETRY", 7, "redis")
