"""Live progress of jobs in Redis: a state hash and an event stream per job, best effort.

The import never waits on Redis and never fails because of it: every call has short socket
timeouts, every Redis error is swallowed and logged, and after an error the next calls are
skipped for :data:`BACKOFF_S` seconds, so an import with Redis down pays one timeout per
back-off window instead of one per batch. PostgreSQL holds the durable record.

A job's final state is the exception: it is never skipped. Left unwritten, the hash would say
STARTED for :data:`TTL_RUNNING_S` and the event stream would never say ``final``. So the
final write ignores the back-off and is retried (tenacity, :data:`FINAL_ATTEMPTS` tries, well
under three seconds in all; one try while Redis is known to be down, so a long Redis outage
costs each job one timeout, not several). If it still fails, the API reconciles: a terminal
state in PostgreSQL wins over a non-terminal one in Redis (``api/routes/jobs.py``,
``api/sse.py``), and :meth:`Progress.reconcile` writes it into Redis.

Hash ``keys.job_state``: state, rows, bytes, total_bytes, percent, rejected, attempt, error,
table, started_at, finished_at, updated_at (all strings). Stream ``keys.job_events``: each
entry has ``type`` in {state, progress, final}; the last entry of a job is ``final`` with
its end state. Keys expire :data:`TTL_AFTER_END_S` after the job ends (and
:data:`TTL_RUNNING_S` after the last write while it runs, so abandoned jobs vanish too).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import redis
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from importd import keys, logs
from importd.config import Settings
from importd.imports.states import FINAL

#: Seconds a Redis connect or command may take before it counts as down.
SOCKET_TIMEOUT_S = 0.25
#: Seconds Redis calls are skipped after a failure.
BACKOFF_S = 5.0
#: Shortest interval between two progress writes of one job (at most ~4 per second).
MIN_INTERVAL_S = 0.25
#: Keys live this long after the job's final state.
TTL_AFTER_END_S = 3600
#: Keys of a running job live this long after its last write.
TTL_RUNNING_S = 24 * 3600
#: Longest wait of one blocking events() call, in milliseconds.
MAX_BLOCK_MS = 30_000
#: Events kept per job (approximate trim).
STREAM_MAXLEN = 1000
FINAL_STATES = FINAL  # one spelling of the job states (issue 11): importd.imports.states
#: Tries of a job's final-state write while Redis is not known to be down.
FINAL_ATTEMPTS = 4
#: Tries of the final-state write during a back-off window (Redis failed moments ago).
FINAL_ATTEMPTS_WHILE_DOWN = 1
#: First wait between final-write tries, in seconds (doubling, at most 1 s).
FINAL_RETRY_WAIT_S = 0.1
#: Redis errors a write may meet.
REDIS_ERRORS = (redis.RedisError, OSError)

#: One write of a job's state and its event, atomic as a script is: the hash fields, the
#: stream entry (``type`` and the same fields), both keys' TTL. KEYS: state hash, event
#: stream; ARGV: ttl, stream maxlen, event type, then field, value pairs. One command (its
#: reply one integer) instead of a MULTI/EXEC of six: the transaction took a small job ~0.3 ms
#: of the worker's CPU per write, two writes a job.
_WRITE_LUA = """
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'type', ARGV[3], unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Progress:
    """Writes and reads job progress; safe to share between threads."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.prefix = settings.redis_prefix
        self.url = settings.redis_url
        self._blocking: redis.Redis | None = None
        self.redis = client or redis.Redis.from_url(
            settings.redis_url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S,
            decode_responses=True, health_check_interval=0)
        self.log = logs.get("importd.imports.progress")
        self._script = self.redis.register_script(_WRITE_LUA)
        self._down_until = 0.0
        self._last_write: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- best-effort plumbing ---------------------------------------------------------

    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _call(self, what: str, fn: Any, default: Any = None) -> Any:
        if not self.available():
            return default
        try:
            return fn()
        except (redis.RedisError, OSError) as exc:
            self._down_until = time.monotonic() + BACKOFF_S
            self.log.warning("redis unavailable, progress skipped", op=what, error=str(exc)[:200],
                             retry_in_s=BACKOFF_S)
            return default

    def _write(self, job_id: str, fields: dict[str, Any], event_type: str, ttl: int,
               final: bool = False) -> None:
        """Write ``fields`` into the job's hash and, with ``type`` ``event_type``, as an event."""
        args: list[Any] = [ttl, STREAM_MAXLEN, event_type]
        for name, value in fields.items():
            if value is not None:
                args += (name, _text(value))

        def go() -> None:
            self._script(keys=[keys.job_state(self.prefix, job_id), keys.job_events(self.prefix, job_id)],
                         args=args)

        if final:
            self._write_final(job_id, go)
        else:
            self._call("write", go)

    def _write_final(self, job_id: str, go: Any) -> None:
        """Run ``go`` (the final-state write) despite the back-off, retried a bounded number of times."""
        attempts = FINAL_ATTEMPTS if self.available() else FINAL_ATTEMPTS_WHILE_DOWN
        try:
            for attempt in Retrying(stop=stop_after_attempt(attempts), reraise=True,
                                    wait=wait_exponential(multiplier=FINAL_RETRY_WAIT_S, max=1.0),
                                    retry=retry_if_exception_type(REDIS_ERRORS)):
                with attempt:
                    go()
        except REDIS_ERRORS as exc:
            self._down_until = time.monotonic() + BACKOFF_S
            self.log.warning("redis unavailable, final state not written", job_id=job_id, attempts=attempts,
                             error=str(exc)[:200])
            return
        self._down_until = 0.0  # Redis answered: the other writes resume at once

    # -- writers ----------------------------------------------------------------------

    def set_state(self, job_id: str, state: str, **fields: Any) -> None:
        """Record a state change (and a ``state`` event, or ``final`` for an end state)."""
        now = _now()
        fields = {"state": state, "updated_at": now, **fields}
        if state == "STARTED":
            fields.setdefault("started_at", now)
        final = state in FINAL_STATES
        if final:
            fields.setdefault("finished_at", now)
            if state == "SUCCESS":
                fields.setdefault("percent", 100)
        self._write(job_id, fields, "final" if final else "state", TTL_AFTER_END_S if final else TTL_RUNNING_S,
                    final=final)
        with self._lock:  # the first progress update comes MIN_INTERVAL_S after the start
            if final:
                self._last_write.pop(job_id, None)
            else:
                self._last_write[job_id] = time.monotonic()

    def update(self, job_id: str, rows: int | None = None, bytes: int | None = None,  # noqa: A002
               total_bytes: int | None = None, rejected: int | None = None, force: bool = False) -> bool:
        """Record counts, at most once per MIN_INTERVAL_S per job; True if written."""
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last_write.get(job_id, 0.0) < MIN_INTERVAL_S:
                return False
            self._last_write[job_id] = now
        if not self.available():
            return False
        percent = None
        if total_bytes and bytes is not None:
            percent = round(min(100.0, 100.0 * bytes / total_bytes), 1)
        fields = {"rows": rows, "bytes": bytes, "total_bytes": total_bytes, "rejected": rejected,
                  "percent": percent, "updated_at": _now()}
        self._write(job_id, fields, "progress", TTL_RUNNING_S)
        return True

    def reconcile(self, job_id: str, state: str, **fields: Any) -> bool:
        """Write the final ``state`` PostgreSQL holds, unless Redis already has a final state.

        For readers (the API) that found Redis behind the durable record: the hash stops
        contradicting it and the stream gets its ``final`` event. WATCH makes it a no-op when
        a final state lands meanwhile (the worker's own write, or another reader's repair).
        True if written; best effort like every other write.
        """
        assert state in FINAL_STATES
        state_key, events_key = keys.job_state(self.prefix, job_id), keys.job_events(self.prefix, job_id)
        values = {"state": state, "updated_at": _now(), **fields}
        mapping: dict[Any, Any] = {k: _text(v) for k, v in values.items() if v is not None}
        entry: dict[Any, Any] = {"type": "final", "source": "database", **mapping}

        def go() -> bool:
            with self.redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(state_key)
                    if pipe.hget(state_key, "state") in FINAL_STATES:
                        return False
                    pipe.multi()
                    pipe.hset(state_key, mapping=mapping)
                    pipe.xadd(events_key, entry, maxlen=STREAM_MAXLEN, approximate=True)
                    pipe.expire(state_key, TTL_AFTER_END_S)
                    pipe.expire(events_key, TTL_AFTER_END_S)
                    pipe.execute()
                except redis.WatchError:
                    return False
            return True

        return bool(self._call("reconcile", go, default=False))

    def restart(self, job_id: str, state: str, **fields: Any) -> None:
        """Start the job's Redis record over with ``state``: a replayed dead letter reopened the
        job (issue 12 item 3), and what Redis holds is its last life, ending in a ``final``
        event. Left there, every event stream of the job ended at that stale ``final`` and the
        status said FAILURE while PostgreSQL ran the job again. Both keys go and the new state
        is written in one script, retried despite the back-off as a final write is."""
        state_key, events_key = keys.job_state(self.prefix, job_id), keys.job_events(self.prefix, job_id)
        now = _now()
        values = {"state": state, "updated_at": now, **({"started_at": now} if state == "STARTED" else {}), **fields}
        args: list[Any] = [TTL_RUNNING_S, STREAM_MAXLEN, "state"]
        for name, value in values.items():
            if value is not None:
                args += (name, _text(value))

        def go() -> None:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(state_key, events_key)
                self._script(keys=[state_key, events_key], args=args, client=pipe)
                pipe.execute()

        self._write_final(job_id, go)
        with self._lock:
            self._last_write[job_id] = time.monotonic()

    def forget(self, job_id: str) -> None:
        """Drop the throttle state of a job this process no longer runs."""
        with self._lock:
            self._last_write.pop(job_id, None)

    # -- readers ----------------------------------------------------------------------

    def read(self, job_id: str) -> dict[str, str] | None:
        """The job's hash, or None if Redis has nothing (or is down)."""
        data = self._call("read", lambda: self.redis.hgetall(keys.job_state(self.prefix, job_id)))
        return dict(data) if data else None

    def events(self, job_id: str, after_id: str = "0", block_ms: int = 0,
               count: int = 100) -> list[tuple[str, dict[str, str]]]:
        """Events after ``after_id`` (``"0"``: from the start), waiting up to ``block_ms``."""
        key = keys.job_events(self.prefix, job_id)

        def go() -> list[tuple[str, dict[str, str]]]:
            if block_ms:
                result: Any = self._blocking_client().xread({key: after_id}, count=count,
                                                       block=min(block_ms, MAX_BLOCK_MS))
            else:
                result = self.redis.xread({key: after_id}, count=count)
            out: list[tuple[str, dict[str, str]]] = []
            for _stream, entries in result or []:
                out.extend((event_id, dict(data)) for event_id, data in entries)
            return out

        return self._call("events", go, default=[]) or []

    def _blocking_client(self) -> redis.Redis:
        """A second client whose read timeout outlasts a blocking XREAD."""
        if self._blocking is None:
            self._blocking = redis.Redis.from_url(
                self.url, socket_timeout=SOCKET_TIMEOUT_S + MAX_BLOCK_MS / 1000,
                socket_connect_timeout=SOCKET_TIMEOUT_S, decode_responses=True)
        return self._blocking

    def close(self) -> None:
        try:
            self.redis.close()
            if self._blocking is not None:
                self._blocking.close()
        except Exception:  # noqa: BLE001 - closing is best effort too
            pass


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
