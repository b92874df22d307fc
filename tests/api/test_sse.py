"""SSE progress stream against a real uvicorn process: ids, resume, keepalive, final, cleanup."""

from __future__ import annotations

import os
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis

from importd import keys
from importd.config import Settings
from importd.imports import store
from importd.imports.progress import Progress
from tests.support.importing import end_with_lost_final_write
from tests.support.infra import wait_for

pytestmark = pytest.mark.anyio


def make_job(settings: Settings, state: str = "STARTED") -> str:
    with store.connect(settings) as conn:
        return store.create_job(conn, store.JobRecord(id=uuid.uuid4().hex, target_table="public.api_people",
                                                      state=state)).id


def stream_ids(settings: Settings, job_id: str) -> list[str]:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        return [event_id for event_id, _ in client.xrange(keys.job_events(settings.redis_prefix, job_id))]
    finally:
        client.close()


def sse_clients(settings: Settings) -> int:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return sum(1 for c in client.client_list() if c.get("name") == f"{settings.redis_prefix}:sse")
    finally:
        client.close()


def redis_sockets(pid: int, port: int = 6379) -> int:
    """Established TCP connections of process ``pid`` to ``port`` (from /proc: exact per process)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "01" and int(parts[2].rsplit(":", 1)[1], 16) == port and parts[9] in inodes:
                found += 1
    return found


async def read_events(response: httpx.Response, stop_after: int | None = None) -> list[dict[str, Any]]:
    """Parse the stream into events (comments as {"comment": ...}); stop after n real events."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    real = 0
    async for line in response.aiter_lines():
        if line.startswith(":"):
            events.append({"comment": line[1:].strip()})
        elif line == "":
            if current:
                events.append(current)
                real += "data" in current
                current = {}
                if stop_after is not None and real >= stop_after:
                    return events
        else:
            name, _, value = line.partition(": ")
            current[name] = value
    return events


async def open_streams(stack: AsyncExitStack, client: httpx.AsyncClient, job_id: str, n: int) -> list[Any]:
    """``n`` event streams of one job, each read up to its first event; the line iterators are
    returned to be kept alive (a dropped one closes its response)."""
    readers = []
    for _ in range(n):
        r = await stack.enter_async_context(client.stream("GET", f"/api/jobs/{job_id}/events"))
        assert r.status_code == 200
        lines = r.aiter_lines()
        while not (await anext(lines)).startswith("data:"):
            pass
        readers.append(lines)
    return readers


def real(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if "data" in e]


async def test_each_event_has_its_stream_id_and_the_stream_closes_after_the_final_event(
        start_api: Any, api_settings: Settings) -> None:
    job_id = make_job(api_settings)
    progress = Progress(api_settings)
    progress.set_state(job_id, "STARTED")
    for i in range(3):
        progress.update(job_id, rows=i * 10, bytes=i, total_bytes=3, force=True)
    progress.set_state(job_id, "SUCCESS", rows=30)
    progress.close()
    with start_api() as api:
        async with httpx.AsyncClient(base_url=api.url, timeout=20) as c:
            async with c.stream("GET", f"/api/jobs/{job_id}/events") as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                assert r.headers["cache-control"] == "no-cache"
                assert r.headers["x-accel-buffering"] == "no"
                events = real(await read_events(r))  # returns only when the server closes
    assert [e["id"] for e in events] == stream_ids(api_settings, job_id)
    assert [e["event"] for e in events] == ["state", "progress", "progress", "progress", "final"]
    assert '"state":"SUCCESS"' in events[-1]["data"]


async def test_a_client_reconnecting_with_last_event_id_gets_every_later_event_exactly_once(
        start_api: Any, api_settings: Settings) -> None:
    job_id = make_job(api_settings)
    progress = Progress(api_settings)
    progress.set_state(job_id, "STARTED")
    for i in range(5):
        progress.update(job_id, rows=i, force=True)
    with start_api() as api:
        async with httpx.AsyncClient(base_url=api.url, timeout=20) as c:
            async with c.stream("GET", f"/api/jobs/{job_id}/events") as r:
                first = real(await read_events(r, stop_after=3))  # disconnect at event k=3
            for i in range(5, 9):  # written while the client is away
                progress.update(job_id, rows=i, force=True)
            progress.set_state(job_id, "SUCCESS")
            async with c.stream("GET", f"/api/jobs/{job_id}/events",
                                headers={"Last-Event-ID": first[-1]["id"]}) as r:
                rest = real(await read_events(r))
    progress.close()
    seen = [e["id"] for e in first + rest]
    assert seen == stream_ids(api_settings, job_id)  # everything, in order, no repeats
    assert rest[-1]["event"] == "final"


async def test_a_quiet_stream_gets_keepalive_comments_and_live_events_as_they_happen(
        start_api: Any, api_settings: Settings) -> None:
    job_id = make_job(api_settings)
    progress = Progress(api_settings)
    progress.set_state(job_id, "STARTED")
    with start_api(sse_keepalive_s=0.3) as api:
        async with httpx.AsyncClient(base_url=api.url, timeout=20) as c:
            async with c.stream("GET", f"/api/jobs/{job_id}/events") as r:
                lines = r.aiter_lines()
                got: list[str] = []
                async for line in lines:
                    got.append(line)
                    if got.count(": keepalive") >= 2:
                        break
                progress.update(job_id, rows=7, force=True)
                progress.set_state(job_id, "FAILURE", error="boom")
                rest = [line async for line in lines]
    progress.close()
    assert got[0] == "retry: 2000"
    assert any(line.startswith("event: state") for line in got)
    assert "event: progress" in rest and "event: final" in rest


async def test_a_job_whose_redis_stream_is_gone_gets_its_final_event_from_postgresql(
        start_api: Any, api_settings: Settings) -> None:
    job_id = make_job(api_settings, state="SUCCESS")
    with start_api() as api:
        async with httpx.AsyncClient(base_url=api.url, timeout=20) as c:
            async with c.stream("GET", f"/api/jobs/{job_id}/events") as r:
                events = real(await read_events(r))
    assert len(events) == 1 and events[0]["event"] == "final" and "id" not in events[0]
    assert '"state":"SUCCESS"' in events[0]["data"]


async def test_a_last_event_id_that_is_not_a_stream_id_is_400(api_client: Any, api_settings: Settings) -> None:
    job_id = make_job(api_settings)
    async with api_client() as c:
        r = await c.get(f"/api/jobs/{job_id}/events", headers={"Last-Event-ID": "abc"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_last_event_id"


@pytest.mark.slow
async def test_200_sse_clients_connected_then_gone_leave_redis_client_count_where_it_was(
        start_api: Any, api_settings: Settings) -> None:
    job_id = make_job(api_settings)
    Progress(api_settings).set_state(job_id, "STARTED")
    admin = redis.Redis.from_url(api_settings.redis_url)
    # a keepalive far away: the server must notice the disconnects themselves, not a failed write
    with start_api(sse_keepalive_s=60) as api:
        pid = api.proc.pid
        before_named = sse_clients(api_settings)
        before_own = redis_sockets(pid)
        before_total = int(admin.info("clients")["connected_clients"])
        limits = httpx.Limits(max_connections=250, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=api.url, timeout=30, limits=limits) as c:
            async with AsyncExitStack() as stack:
                readers = await open_streams(stack, c, job_id, 200)  # noqa: F841 - kept alive
                wait_for(lambda: sse_clients(api_settings) == before_named + 200, timeout=30,
                         what="200 SSE redis connections")
                assert redis_sockets(pid) == before_own + 200
                started = time.monotonic()
        wait_for(lambda: sse_clients(api_settings) == before_named, timeout=10, what="SSE connections closed")
        freed_after = time.monotonic() - started
        wait_for(lambda: redis_sockets(pid) == before_own, timeout=10, what="the API's redis sockets closed")
        # Redis' own count, which other test runs on this Redis may move a little: 200 leaked
        # connections would show; a few from elsewhere do not make this flaky.
        wait_for(lambda: int(admin.info("clients")["connected_clients"]) < before_total + 20, timeout=10,
                 what="redis connected_clients back to its count before")
    admin.close()
    assert freed_after < 10  # long before the 60 s keepalive


async def test_resume_also_works_with_the_last_event_id_query_parameter(api_client: Any,
                                                                       api_settings: Settings) -> None:
    job_id = make_job(api_settings)
    progress = Progress(api_settings)
    progress.set_state(job_id, "STARTED")
    progress.update(job_id, rows=1, force=True)
    progress.set_state(job_id, "SUCCESS")
    progress.close()
    ids = stream_ids(api_settings, job_id)
    async with api_client() as c:
        r = await c.get(f"/api/jobs/{job_id}/events", params={"last_event_id": ids[0]})
    assert [line[4:] for line in r.text.splitlines() if line.startswith("id: ")] == ids[1:]


async def test_with_redis_down_a_finished_job_still_gets_its_final_event(api_client: Any,
                                                                         api_settings: Settings) -> None:
    job_id = make_job(api_settings, state="FAILURE")
    async with api_client(redis_url="redis://127.0.0.1:1/0") as c:
        r = await c.get(f"/api/jobs/{job_id}/events")
    assert r.status_code == 200
    assert "event: final" in r.text and '"state":"FAILURE"' in r.text and '"source":"database"' in r.text


async def test_a_stream_whose_final_redis_write_was_lost_ends_with_final_from_postgresql(
        api_client: Any, api_settings: Settings) -> None:
    """Issue 12 item 7, SSE side: the Redis stream exists but never got ``final`` (the worker's
    write was lost to a stall) while PostgreSQL says FAILURE: at the next keepalive the stream
    checks PostgreSQL, sends ``final`` and ends (it used to stay open for a day)."""
    job_id = make_job(api_settings)
    end_with_lost_final_write(api_settings, job_id, "FAILURE", rows=0)
    async with api_client() as c:
        r = await c.get(f"/api/jobs/{job_id}/events")  # returns only once the server ends the stream
    events = real(await _parse(r.text))
    assert [e["event"] for e in events] == ["state", "progress", "final"]
    assert '"state":"FAILURE"' in events[-1]["data"] and '"source":"database"' in events[-1]["data"]


async def _parse(text: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith((":", "retry:"))]
        if lines:
            events.append(dict(line.split(": ", 1) for line in lines))
    return events


async def test_past_sse_max_clients_a_new_stream_is_429_until_one_goes_away(
        start_api: Any, api_settings: Settings) -> None:
    """Issue 12 item 10: with IMPORTD_SSE_MAX_CLIENTS=2 and two streams open, a third gets 429
    too_many_streams with Retry-After (no Redis connection taken); once one closes, a new
    stream is served again."""
    job_id = make_job(api_settings)
    Progress(api_settings).set_state(job_id, "STARTED")
    with start_api(env={"IMPORTD_SSE_MAX_CLIENTS": "2"}, sse_keepalive_s=60) as api:
        async with httpx.AsyncClient(base_url=api.url, timeout=20) as c:
            async with AsyncExitStack() as stack:
                readers = await open_streams(stack, c, job_id, 2)  # noqa: F841 - kept alive
                wait_for(lambda: sse_clients(api_settings) >= 2, what="two SSE redis connections")
                refused = await c.get(f"/api/jobs/{job_id}/events")
                assert refused.status_code == 429, refused.text
                assert refused.json()["error"]["code"] == "too_many_streams"
                assert int(refused.headers["retry-after"]) > 0
            # both streams closed: their slots come back
            async def served() -> bool:
                async with c.stream("GET", f"/api/jobs/{job_id}/events") as again:
                    return again.status_code == 200
            for _ in range(100):
                if await served():
                    break
                await anyio.sleep(0.1)
            else:
                raise AssertionError("no stream served after the others closed")


async def test_a_stale_final_event_of_a_job_a_replay_reopened_does_not_end_its_stream(
        api_client: Any, api_settings: Settings) -> None:
    """Issues 12 items 3 and 7: a replay reopened a job that died FAILURE an hour ago, and the
    worker's restart of its Redis record was lost, so the stream still ends with the old
    ``final`` FAILURE while PostgreSQL runs the job. That final is skipped (every stream of
    a replayed job used to end there at once); the stream ends with the job's real end."""
    job_id = _reopened_job(api_settings)
    old = Progress(api_settings)
    old.set_state(job_id, "STARTED", attempt=4)
    old.set_state(job_id, "FAILURE", error="gave up after 4 attempts")  # its last life
    old.close()

    async def finish_later() -> None:
        await anyio.sleep(1.5)
        with store.connect(api_settings) as conn:
            store.update_job(conn, job_id, state="SUCCESS", rows_imported=3, finished_at=store.NOW)

    async with api_client() as c, anyio.create_task_group() as tg:
        tg.start_soon(finish_later)
        r = await c.get(f"/api/jobs/{job_id}/events")  # returns once the server ends the stream
        body = (await c.get(f"/api/jobs/{job_id}")).json()
    finals = [e for e in real(await _parse(r.text)) if e["event"] == "final"]
    assert len(finals) == 1 and '"state":"SUCCESS"' in finals[0]["data"], r.text
    assert body["state"] == "SUCCESS"


async def test_a_stale_final_state_in_redis_is_answered_with_postgresql_s(
        api_client: Any, api_settings: Settings) -> None:
    """The status side of the same: Redis says FAILURE (final), PostgreSQL says STARTED (the
    job reopened): GET answers STARTED from PostgreSQL instead of trusting a final Redis state."""
    job_id = _reopened_job(api_settings)
    old = Progress(api_settings)
    old.set_state(job_id, "FAILURE", error="gave up after 4 attempts")
    old.close()
    async with api_client() as c:
        body = (await c.get(f"/api/jobs/{job_id}")).json()
    assert (body["state"], body["source"]) == ("STARTED", "database")


def _reopened_job(settings: Settings) -> str:
    """A job a replay reopened: STARTED again in PostgreSQL, its FAILURE in ``history``."""
    with store.connect(settings) as conn:
        return store.create_job(conn, store.JobRecord(
            id=uuid.uuid4().hex, target_table="public.api_people", state="STARTED",
            history=[{"replay_id": "r1", "state": "FAILURE", "error": "gave up after 4 attempts"}])).id
