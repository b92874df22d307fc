"""The pure rule from an outcome to the publish it needs (issue 11 point 5), on a stub delivery."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from importd.errors import SoftTimeLimitExceeded, TransientError
from importd.worker import messages, retry, topology
from importd.worker.outcomes import Kind, Outcome, WorkerLost, failed, publish_for

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class StubDelivery:
    """What the rule reads of a kombu delivery, and nothing else."""

    headers: dict[str, Any] = field(default_factory=lambda: {messages.TASK_HEADER: "test.record",
                                                             messages.ATTEMPT_HEADER: 2})
    properties: dict[str, Any] = field(default_factory=lambda: {"message_id": "job-1", "priority": 3})
    delivery_info: dict[str, Any] = field(default_factory=lambda: {"exchange": "default", "routing_key": "default"})


def _outcome(kind: Kind, **kw: Any) -> Outcome:
    return Outcome(kind, kw.pop("message", StubDelivery()), "default", 0, **kw)


def test_an_ack_publishes_nothing():
    assert publish_for(_outcome(Kind.ACK), NOW) is None
    assert _outcome(Kind.ACK).event == "succeeded"
    assert _outcome(Kind.ACK, error="PermanentError: bad").event == "failed"


def test_a_retry_goes_to_its_steps_delay_queue_with_the_next_attempt_and_a_jittered_expiration():
    msg = StubDelivery(headers={messages.TASK_HEADER: "test.record", "x-death": [{}], "keep": 1})
    plan = publish_for(_outcome(Kind.RETRY, message=msg, attempt=3, step=2), NOW, random.Random(1))
    assert plan is not None
    assert (plan.exchange, plan.routing_key) == (topology.RETRY_EXCHANGE, topology.retry_queue_name("default", 2))
    assert plan.headers == {messages.TASK_HEADER: "test.record", "keep": 1, messages.ATTEMPT_HEADER: 3}
    assert (plan.message_id, plan.priority) == ("job-1", 3)
    assert plan.expiration_ms is not None
    assert retry.step_delay_s(2) * 1000 <= plan.expiration_ms <= retry.step_ttl_ms(2)


def test_a_defer_always_takes_the_first_delay_queue():
    plan = publish_for(_outcome(Kind.DEFER, attempt=2, step=3), NOW, random.Random(1))
    assert plan is not None and plan.routing_key == topology.retry_queue_name("default", 1)
    assert plan.headers[messages.ATTEMPT_HEADER] == 2


def test_a_dead_letter_goes_to_the_dlx_with_importds_record_replacing_an_older_one():
    msg = StubDelivery(headers={messages.TASK_HEADER: "t", messages.REASON_HEADER: "old"})
    plan = publish_for(_outcome(Kind.DEAD_LETTER, message=msg, attempt=4, reason="max-retries", error="E: x"), NOW)
    assert plan is not None
    assert (plan.exchange, plan.routing_key) == (topology.DLX, "default.failed")
    assert plan.expiration_ms is None
    assert {k: plan.headers[k] for k in messages.DEAD_HEADERS} == {
        messages.REASON_HEADER: "max-retries", messages.ERROR_HEADER: "E: x", messages.ATTEMPTS_HEADER: 4,
        messages.ORIGINAL_EXCHANGE_HEADER: "default", messages.ORIGINAL_ROUTING_KEY_HEADER: "default",
        messages.ORIGINAL_QUEUE_HEADER: "default", messages.DIED_AT_HEADER: NOW.isoformat()}
    assert plan.headers[messages.TASK_HEADER] == "t"


def test_a_hostile_priority_property_is_published_as_zero():
    msg = StubDelivery(properties={"message_id": None, "priority": "9"})
    plan = publish_for(_outcome(Kind.DEAD_LETTER, message=msg), NOW)
    assert plan is not None and (plan.priority, plan.message_id) == (0, "")


def test_a_failed_attempt_retries_until_max_retries_then_is_dead_lettered_with_its_reason():
    base = _outcome(Kind.ACK)
    first = failed(base, 1, 3, TransientError("x"))
    assert (first.kind, first.attempt, first.step, first.reason) == (Kind.RETRY, 2, 1, "max-retries")
    assert failed(base, 3, 3, SoftTimeLimitExceeded("s")).reason == "soft-time-limit"
    last = failed(base, 4, 3, WorkerLost("w"))
    assert (last.kind, last.reason, last.error) == (Kind.DEAD_LETTER, "worker-lost", "WorkerLost: w")
