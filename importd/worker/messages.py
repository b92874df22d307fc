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

from importd.errors import InvalidMessage
from importd.worker import tasks

#: Header naming the task type.
TASK_HEADER = "x-importd-task"
#: Header carrying the attempt number (1 for the first delivery).
ATTEMPT_HEADER = "x-importd-attempt"
#: Header set by ``importd replay-dlq``: the id of the replay that brought the message back
#: (opaque here; the handler uses it to reopen the job once per replay, issue 12 item 3).
REPLAY_HEADER = "x-importd-replay"
#: Longest replay id kept (a longer header is cut).
MAX_REPLAY_CHARS = 128
#: Largest body accepted; a larger one is dead-lettered unread.
MAX_BODY_BYTES = 1024 * 1024
#: A job id: what the API and CLI make (uuid4 hex) and what tests use.
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
CONTENT_TYPE = "application/json"
#: Highest priority a job may carry (import_queue's x-max-priority).
MAX_PRIORITY = 10


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


def decode(body: bytes | str, headers: dict[str, Any] | None, content_type: str | None = CONTENT_TYPE,
           priority: int | None = 0) -> Job:
    """Validate a delivery; raise :class:`InvalidMessage` with a short reason on any defect."""
    headers = headers or {}
    raw = body.encode() if isinstance(body, str) else bytes(body)
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidMessage("body-too-large", f"{len(raw)} bytes > {MAX_BODY_BYTES}")
    if content_type not in (CONTENT_TYPE, None, ""):
        raise InvalidMessage("bad-content-type", str(content_type))
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidMessage("not-json", str(exc)[:200]) from exc
    if not isinstance(data, dict):
        raise InvalidMessage("bad-shape", "body is not a JSON object")
    job_id = data.get("job_id")
    if not isinstance(job_id, str) or not JOB_ID.match(job_id):
        raise InvalidMessage("bad-job-id", repr(job_id)[:200])
    args = data.get("args", {})
    if not isinstance(args, dict):
        raise InvalidMessage("bad-shape", "args is not a JSON object")
    extra = set(data) - {"job_id", "args"}
    if extra:
        raise InvalidMessage("bad-shape", f"unexpected fields {sorted(extra)}")
    task = headers.get(TASK_HEADER)
    if not isinstance(task, str) or not task:
        raise InvalidMessage("missing-task", f"no {TASK_HEADER} header")
    if tasks.get(task) is None:
        raise InvalidMessage("unknown-task", task[:200])
    attempt = headers.get(ATTEMPT_HEADER, 1)
    if isinstance(attempt, bytes):
        attempt = attempt.decode(errors="replace")
    try:
        attempt = int(attempt)
    except (TypeError, ValueError) as exc:
        raise InvalidMessage("bad-attempt", repr(attempt)[:50]) from exc
    if attempt < 1:
        raise InvalidMessage("bad-attempt", str(attempt))
    priority = int(priority or 0)
    if not 0 <= priority <= MAX_PRIORITY:
        raise InvalidMessage("bad-priority", f"{priority} not in 0-{MAX_PRIORITY}")
    replay = headers.get(REPLAY_HEADER) or ""
    replay = replay.decode(errors="replace") if isinstance(replay, bytes) else str(replay)
    return Job(job_id=job_id, task=task, args=args, attempt=attempt, priority=priority,
               replay=replay[:MAX_REPLAY_CHARS])
