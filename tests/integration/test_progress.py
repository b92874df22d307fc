"""Progress in Redis: state hash, resumable event stream, throttling, expiry, Redis down."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
import uuid
from urllib.parse import urlsplit

import redis

from importd import keys
from importd.config import Settings
from importd.imports.progress import MIN_INTERVAL_S, TTL_AFTER_END_S, Progress
from tests.support.proxy import Proxy


def test_states_progress_and_final_event_are_written_and_resumable_by_event_id(settings: Settings):
    progress = Progress(settings)
    job_id = uuid.uuid4().hex
    progress.set_state(job_id, "PENDING", table="people")
    progress.set_state(job_id, "STARTED", attempt=1, total_bytes=1000)
    assert not progress.update(job_id, rows=5, bytes=100, total_bytes=1000)  # too soon after the start
    assert progress.update(job_id, rows=10, bytes=250, total_bytes=1000, rejected=1, force=True)
    progress.set_state(job_id, "SUCCESS", rows=40, rejected=1)
    state = progress.read(job_id)
    assert state is not None
    assert {k: state[k] for k in ("state", "rows", "rejected", "percent", "attempt", "table")} == {
        "state": "SUCCESS", "rows": "40", "rejected": "1", "percent": "100", "attempt": "1", "table": "people"}
    assert state["started_at"] <= state["finished_at"]
    events = progress.events(job_id)
    assert [e["type"] for _, e in events] == ["state", "state", "progress", "final"]
    assert events[2][1]["percent"] == "25.0"
    assert events[-1][1]["state"] == "SUCCESS"
    assert progress.events(job_id, after_id=events[1][0]) == events[2:]
    client = redis.Redis.from_url(settings.redis_url)
    for key in (keys.job_state(settings.redis_prefix, job_id), keys.job_events(settings.redis_prefix, job_id)):
        assert TTL_AFTER_END_S - 5 <= client.ttl(key) <= TTL_AFTER_END_S


def test_progress_updates_are_throttled_to_a_few_per_second(settings: Settings):
    progress = Progress(settings)
    job_id = uuid.uuid4().hex
    written = sum(progress.update(job_id, rows=i, bytes=i, total_bytes=100) for i in range(100))
    assert written == 1
    time.sleep(MIN_INTERVAL_S)
    assert progress.update(job_id, rows=100, bytes=100, total_bytes=100)


def test_blocking_events_read_returns_new_events(settings: Settings):
    progress = Progress(settings)
    job_id = uuid.uuid4().hex
    assert progress.events(job_id, block_ms=100) == []
    progress.set_state(job_id, "STARTED")
    assert [e["state"] for _, e in progress.events(job_id, block_ms=100)] == ["STARTED"]


class SilentServer:
    """Accepts TCP connections and never answers (a hung Redis); counts the connections."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.listener.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()
        for conn in self.accepted:
            conn.close()


def test_redis_down_costs_one_short_timeout_then_calls_are_skipped(settings: Settings):
    """Counted, not timed: after the first call timed out, the next 399 reach no server."""
    server = SilentServer()
    try:
        down = Progress(dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{server.port}/0"))
        down.set_state("j", "STARTED")  # connects, then times out waiting for the reply
        assert not down.available()
        tried = len(server.accepted)
        assert tried >= 1
        for i in range(200):
            down.set_state("j", "STARTED")
            down.update("j", rows=i, bytes=i, total_bytes=200, force=True)
        assert down.read("j") is None and down.events("j") == []
        assert len(server.accepted) == tried  # skipped: no connection attempted
        assert not down.available()
    finally:
        server.close()


def test_the_final_state_is_written_even_moments_after_a_redis_error(settings: Settings):
    """Issue 12 item 7, writer side: a Redis stall near the end of a job (a write timed out,
    the back-off window is open) does not make the final state be skipped: the hash says
    SUCCESS and the stream ends with ``final`` (it used to say STARTED for a day)."""
    url = urlsplit(settings.redis_url)
    job_id = uuid.uuid4().hex
    with Proxy(url.hostname or "127.0.0.1", url.port or 6379) as proxy:
        progress = Progress(dataclasses.replace(settings, redis_url=url._replace(
            netloc=f"127.0.0.1:{proxy.port}").geturl()))
        progress.set_state(job_id, "STARTED")
        proxy.stall()
        assert progress.update(job_id, rows=1, bytes=1, total_bytes=2, force=True)  # tried, timed out
        assert not progress.available()  # the back-off window is open
        proxy.cut()  # drop what the stalled connection had in flight
        proxy.resume()
        progress.set_state(job_id, "SUCCESS", rows=2)
        progress.close()
    direct = Progress(settings)
    state = direct.read(job_id)
    events = direct.events(job_id)
    direct.close()
    assert state is not None and state["state"] == "SUCCESS"
    assert "final" in [e["type"] for _, e in events]


def test_reconcile_writes_the_durable_final_state_once_and_never_over_a_final_one(settings: Settings):
    """Issue 12 item 7, reader side: the API's repair puts PostgreSQL's terminal state into a
    Redis hash stuck at STARTED (with a ``final`` event), and leaves a final state alone."""
    progress = Progress(settings)
    job_id = uuid.uuid4().hex
    progress.set_state(job_id, "STARTED")
    assert progress.reconcile(job_id, "FAILURE", error="bad rows")
    assert not progress.reconcile(job_id, "SUCCESS")  # already final: untouched
    state = progress.read(job_id)
    assert state is not None and (state["state"], state["error"]) == ("FAILURE", "bad rows")
    assert [e["type"] for _, e in progress.events(job_id)] == ["state", "final"]
    client = redis.Redis.from_url(settings.redis_url)
    assert 0 < client.ttl(keys.job_state(settings.redis_prefix, job_id)) <= TTL_AFTER_END_S
    client.close()
    progress.close()


def test_restart_drops_a_job_s_last_life_and_starts_its_record_over(settings: Settings):
    """Issues 12 items 3 and 7: a replayed dead letter reopens a FAILURE job; its Redis state
    and stream (ending in ``final``) start over, so no reader sees the old end."""
    job_id = uuid.uuid4().hex
    progress = Progress(settings)
    progress.set_state(job_id, "STARTED", attempt=4)
    progress.set_state(job_id, "FAILURE", error="gave up")
    progress.restart(job_id, "STARTED", attempt=1)
    events = progress.events(job_id)
    state = progress.read(job_id) or {}
    progress.close()
    assert [e[1]["type"] for e in events] == ["state"] and events[0][1]["state"] == "STARTED"
    assert (state.get("state"), state.get("attempt"), state.get("error")) == ("STARTED", "1", None)
