"""What a delivery's outcome is, and the publish it takes to carry it out (issue 11 point 5).

:func:`publish_for` is pure: given an outcome (and the time and the random source) it says
where the message goes next and with which headers, so the rules are unit tested without a
broker; the consumer's connection owner only performs the publish and the ack.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from importd.errors import SoftTimeLimitExceeded
from importd.worker import messages, retry, topology
from importd.worker.messages import Job


class Kind(enum.Enum):
    """What happens to a delivery once its job thread (or the dispatch) decided."""

    ACK = "ack"  # done: success, or a PermanentError the handler recorded
    RETRY = "retry"  # failed: the next delay queue with the next attempt number
    DEFER = "defer"  # not now (rate limit, lock): the first delay queue, same attempt
    DEAD_LETTER = "dead"  # failed_tasks, with importd's dead-letter headers


#: The job event each kind emits once settled (an ACK with an error is ``failed``).
EVENTS = {Kind.ACK: "succeeded", Kind.RETRY: "retried", Kind.DEFER: "deferred", Kind.DEAD_LETTER: "dead-lettered"}


@dataclass(frozen=True)
class Outcome:
    """What the job thread decided; the connection's owner carries it out.

    ``message`` is the kombu delivery (``body``, ``headers``, ``properties``,
    ``delivery_info``, ``ack()``); ``generation`` the connection it came on.
    """

    kind: Kind
    message: Any
    queue: str
    generation: int
    job: Job | None = None
    attempt: int = 1
    step: int = 1
    reason: str = ""
    error: str = ""
    duration_s: float = 0.0

    @property
    def event(self) -> str:
        return "failed" if self.kind is Kind.ACK and self.error else EVENTS[self.kind]


class WorkerLost(Exception):
    """The previous delivery of this message ended without an ack (process killed, OOM)."""


def failed(base: Outcome, attempt: int, max_retries: int, exc: BaseException) -> Outcome:
    """Retry (next step and attempt) or dead-letter (past ``max_retries``) failed ``attempt``."""
    decision = retry.decide(attempt, max_retries)
    error = f"{type(exc).__name__}: {exc}"[:2000]
    reason = "worker-lost" if isinstance(exc, WorkerLost) else (
        "soft-time-limit" if isinstance(exc, SoftTimeLimitExceeded) else "max-retries")
    if decision.gives_up:
        return replace(base, kind=Kind.DEAD_LETTER, reason=reason, error=error)
    return replace(base, kind=Kind.RETRY, reason=reason, error=error, step=decision.step or 1,
                   attempt=decision.next_attempt)


@dataclass(frozen=True)
class Publish:
    """One publish (persistent, mandatory, confirmed) of the delivery's body."""

    exchange: str
    routing_key: str
    headers: dict[str, Any]
    message_id: str
    priority: int
    expiration_ms: int | None = None


def publish_for(outcome: Outcome, now: datetime, rng: random.Random | None = None) -> Publish | None:
    """The publish an outcome needs before its ack (None: an ACK publishes nothing)."""
    props = outcome.message.properties
    message_id = str(props.get("message_id") or "")
    priority = props.get("priority")
    priority = priority if isinstance(priority, int) and not isinstance(priority, bool) else 0
    if outcome.kind in (Kind.RETRY, Kind.DEFER):
        step = outcome.step if outcome.kind is Kind.RETRY else 1
        headers = {k: v for k, v in (outcome.message.headers or {}).items()
                   if not k.startswith(messages.RABBIT_DEAD_PREFIXES)}
        headers[messages.ATTEMPT_HEADER] = outcome.attempt
        return Publish(topology.RETRY_EXCHANGE, topology.retry_queue_name(outcome.queue, step), headers,
                       message_id, priority, retry.jittered_delay_ms(step, rng))
    if outcome.kind is Kind.DEAD_LETTER:
        return Publish(topology.DLX, topology.queue_spec(outcome.queue).failed_key, dead_headers(outcome, now),
                       message_id, priority)
    return None


def dead_headers(outcome: Outcome, now: datetime) -> dict[str, Any]:
    """The delivery's headers with importd's dead-letter record (an older record replaced)."""
    info = outcome.message.delivery_info
    headers = {k: v for k, v in (outcome.message.headers or {}).items() if k not in messages.DEAD_HEADERS}
    headers.update({
        messages.REASON_HEADER: outcome.reason,
        messages.ERROR_HEADER: outcome.error,
        messages.ATTEMPTS_HEADER: outcome.attempt,
        messages.ORIGINAL_EXCHANGE_HEADER: info.get("exchange", ""),
        messages.ORIGINAL_ROUTING_KEY_HEADER: info.get("routing_key", ""),
        messages.ORIGINAL_QUEUE_HEADER: outcome.queue,
        messages.DIED_AT_HEADER: now.isoformat(),
    })
    return headers
