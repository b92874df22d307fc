"""The wire format of a job, and the validation every delivery goes through.

Body: JSON object ``{"job_id": str, "args": {...}}``; ``content_type`` application/json;
``message_id`` is the job id; headers name the task and the attempt. Attempts are counted in
importd's own header, never from ``x-death`` (whose meaning changed in RabbitMQ 3.13/4.0).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from importd import jsontext
from importd.errors import InvalidMessage
from importd.worker import tasks, wire

#: Header naming the task type.
TASK_HEADER = "x-importd-task"
#: Header carrying the attempt number (1 for the first delivery).
ATTEMPT_HEADER = "x-importd-attempt"
#: Header set by ``importd replay-dlq``: the id of the replay that brought the message back
#: (opaque here; the handler uses it to reopen the job once per replay, issue 12 item 3).
REPLAY_HEADER = "x-importd-replay"
#: Longest replay id kept (a longer header is cut).
MAX_REPLAY_CHARS = 128
#: Headers importd writes on what it dead-letters (read by ``importd dlq``, removed on replay).
REASON_HEADER = "x-importd-reason"
ERROR_HEADER = "x-importd-error"
ATTEMPTS_HEADER = "x-importd-attempts"
ORIGINAL_EXCHANGE_HEADER = "x-importd-original-exchange"
ORIGINAL_ROUTING_KEY_HEADER = "x-importd-original-routing-key"
ORIGINAL_QUEUE_HEADER = "x-importd-original-queue"
DIED_AT_HEADER = "x-importd-died-at"
DEAD_HEADERS = (REASON_HEADER, ERROR_HEADER, ATTEMPTS_HEADER, ORIGINAL_EXCHANGE_HEADER,
                ORIGINAL_ROUTING_KEY_HEADER, ORIGINAL_QUEUE_HEADER, DIED_AT_HEADER)
#: Header prefixes RabbitMQ writes when it dead-letters (importd never counts attempts from them).
RABBIT_DEAD_PREFIXES = ("x-death", "x-first-death", "x-last-death")
#: Largest body accepted; a larger one is dead-lettered unread.
MAX_BODY_BYTES = 1024 * 1024
#: A job id: what the API and CLI make (uuid4 hex) and what tests use.
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
CONTENT_TYPE = "application/json"
#: Highest priority a job may carry (import_queue's x-max-priority).
MAX_PRIORITY = 10
#: Highest attempt number accepted: far above any max_retries, far below AMQP's 64-bit limit
#: (an attempt is republished as ``attempt + 1``).
MAX_ATTEMPT = 1_000_000
#: Reason of a delivery that failed in a way no check foresaw (issue 12 item 2).
UNDECODABLE = "undecodable"


@dataclass(frozen=True)
class Job:
    """A decoded, validated job message."""

    job_id: str
    task: str
    args: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    priority: int = 0
    replay: str = ""  # the replay id of a replayed dead letter, else empty

    def body(self) -> bytes:
        return json.dumps({"job_id": self.job_id, "args": self.args}, separators=(",", ":")).encode()

    def headers(self, attempt: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {TASK_HEADER: self.task, ATTEMPT_HEADER: self.attempt if attempt is None else attempt}
        if self.replay:
            out[REPLAY_HEADER] = self.replay
        return out


def decode(body: bytes | str, headers: Any, content_type: Any = CONTENT_TYPE,
           priority: Any = 0) -> Job:
    """Validate a delivery; raise :class:`InvalidMessage` with a short reason on any defect.

    Issue 12 item 2: no property of a delivery may escape as anything else. The body must
    be I-JSON (:mod:`importd.jsontext`: deep nesting, huge numbers, ``NaN``/``Infinity``,
    duplicate keys, lone surrogate escapes and non-UTF-8 bytes are ``not-json``), ``int()``
    raises OverflowError on an infinite float, a header may hold any AMQP type; whatever a
    check below did not foresee still comes out as ``InvalidMessage("undecodable")``, which
    the consumer dead-letters.
    """
    try:
        return _decode(body, headers, content_type, priority)
    except InvalidMessage:
        raise
    except Exception as exc:  # noqa: BLE001 - the last resort: a defect not named above
        raise InvalidMessage(UNDECODABLE, f"{type(exc).__name__}: {exc}"[:200]) from exc


def _decode(body: bytes | str, headers: Any, content_type: Any, priority: Any) -> Job:
    if headers is None:
        headers = {}
    if not isinstance(headers, dict):
        raise InvalidMessage("bad-headers", type(headers).__name__)
    if wire.UNDECODABLE_HEADER in headers:  # properties the AMQP client could not decode as sent
        raise InvalidMessage("bad-properties", _short(headers[wire.UNDECODABLE_HEADER]))
    if wire.REFUSED_COMPRESSION_HEADER in headers:
        raise InvalidMessage("bad-properties", "a compressed body (compression header): importd takes plain JSON")
    raw = body.encode() if isinstance(body, str) else bytes(body)
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidMessage("body-too-large", f"{len(raw)} bytes > {MAX_BODY_BYTES}")
    if content_type not in (CONTENT_TYPE, None, ""):
        raise InvalidMessage("bad-content-type", repr(content_type)[:200])
    try:
        data = jsontext.loads(raw)
    except jsontext.JsonError as exc:
        raise InvalidMessage("not-json", str(exc)[:200]) from exc
    if not isinstance(data, dict):
        raise InvalidMessage("bad-shape", "body is not a JSON object")
    job_id = data.get("job_id")
    if not isinstance(job_id, str) or not JOB_ID.match(job_id):
        raise InvalidMessage("bad-job-id", _short(job_id))
    args = data.get("args", {})
    if not isinstance(args, dict):
        raise InvalidMessage("bad-shape", "args is not a JSON object")
    extra = set(data) - {"job_id", "args"}
    if extra:
        raise InvalidMessage("bad-shape", f"unexpected fields {sorted(extra)}"[:200])
    task = headers.get(TASK_HEADER)
    if not isinstance(task, str) or not task:
        raise InvalidMessage("missing-task", f"no {TASK_HEADER} header")
    if tasks.get(task) is None:
        raise InvalidMessage("unknown-task", task[:200])
    return Job(job_id=job_id, task=task, args=args, attempt=parse_attempt(headers.get(ATTEMPT_HEADER, 1)),
               priority=_priority(priority), replay=_replay(headers.get(REPLAY_HEADER)))


def _replay(value: Any) -> str:
    """The replay id a replayed dead letter carries (any type a hostile header may hold), cut
    to :data:`MAX_REPLAY_CHARS`; empty for a first delivery."""
    if not value:
        return ""
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return text[:MAX_REPLAY_CHARS]


def parse_attempt(value: Any) -> int:
    """The attempt header as a number in 1..MAX_ATTEMPT (a str or bytes of digits is accepted)."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, bool) or not isinstance(value, (int, str, float)):
        raise InvalidMessage("bad-attempt", _short(value, 50))
    try:
        attempt = int(value)
    except (ValueError, OverflowError) as exc:  # "x", nan, inf, a 5000-digit string
        raise InvalidMessage("bad-attempt", _short(value, 50)) from exc
    if not 1 <= attempt <= MAX_ATTEMPT:
        raise InvalidMessage("bad-attempt", _short(attempt, 50))
    return attempt


def _priority(value: Any) -> int:
    """The AMQP priority property (an octet; None means 0) within 0..MAX_PRIORITY."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidMessage("bad-priority", _short(value, 50))
    if not 0 <= value <= MAX_PRIORITY:
        raise InvalidMessage("bad-priority", f"{_short(value, 50)} not in 0-{MAX_PRIORITY}")
    return value


def _short(value: Any, width: int = 200) -> str:
    """A bounded description of a hostile value (``repr`` of a huge int raises, of a deep list recurses)."""
    try:
        return repr(value)[:width]
    except Exception:  # noqa: BLE001 - ValueError (int digits limit), RecursionError
        return f"<{type(value).__name__}>"
