"""The DLQ's pure parts: reading both kinds of dead-letter headers, filters, replay headers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.ops import dlq
from importd.worker import messages
from tests.support import hostile


@dataclass
class Raw:
    """The shape of a message from ``basic_get``: body, properties, headers."""

    headers: dict[str, Any]
    body: bytes = b'{"job_id": "j1", "args": {}}'
    properties: dict[str, Any] = field(default_factory=lambda: {"message_id": "j1", "priority": 3})


def test_describe_reads_importd_headers_first():
    dead = dlq.describe(Raw({messages.TASK_HEADER: "import.csv", messages.ATTEMPT_HEADER: 4,
                             "x-importd-reason": "max-retries", "x-importd-attempts": 4,
                             "x-importd-error": "boom", "x-importd-died-at": "2026-01-02T03:04:05+00:00",
                             "x-importd-original-exchange": "import_tasks",
                             "x-importd-original-routing-key": "import.csv",
                             "x-death": [{"reason": "expired", "queue": "import_queue.retry.3"}]}))
    assert (dead.job_id, dead.task, dead.reason, dead.attempts, dead.error) == ("j1", "import.csv", "max-retries",
                                                                                4, "boom")
    assert (dead.exchange, dead.routing_key) == ("import_tasks", "import.csv")
    assert dead.died_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_describe_reads_rabbitmq_x_death_when_importd_did_not_dead_letter_it():
    when = datetime(2026, 1, 2, 3, 4, 5)  # py-amqp gives naive UTC timestamps
    dead = dlq.describe(Raw({messages.TASK_HEADER: "import.csv", "x-death": [
        {"reason": "expired", "queue": "import_queue", "time": when, "exchange": "import_tasks",
         "routing-keys": ["import.csv"], "count": 1}]}, properties={}))
    assert (dead.job_id, dead.reason, dead.attempts) == ("j1", "expired", 1)  # job id from the body
    assert (dead.exchange, dead.routing_key, dead.queue) == ("import_tasks", "import.csv", "import_queue")
    assert dead.died_at == when.replace(tzinfo=UTC)


def test_replay_headers_drop_death_records_and_reset_the_attempt_unless_kept():
    headers = {messages.TASK_HEADER: "t", messages.ATTEMPT_HEADER: 4, "x-importd-reason": "max-retries",
               "x-death": [], "x-first-death-queue": "q", "custom": "kept"}
    assert dlq.replay_headers(headers, keep_attempts=False) == {
        messages.TASK_HEADER: "t", messages.ATTEMPT_HEADER: 1, "custom": "kept", dlq.REPLAYS_HEADER: 1}
    again = dlq.replay_headers({**headers, dlq.REPLAYS_HEADER: 1}, keep_attempts=True)
    assert again[messages.ATTEMPT_HEADER] == 4 and again[dlq.REPLAYS_HEADER] == 2


def test_filters_combine_and_older_than_needs_a_death_time():
    now = datetime(2026, 1, 2, tzinfo=UTC)
    dead = dlq.DeadLetter("j1", "import.csv", "expired", 1, now - timedelta(hours=2), "", "x", "y", "q")
    assert dlq.Filter().matches(dead, now)
    assert dlq.Filter(jobs=frozenset({"j1"}), task="import.csv", reason="expired",
                      older_than=timedelta(hours=1)).matches(dead, now)
    assert not dlq.Filter(older_than=timedelta(hours=3)).matches(dead, now)
    assert not dlq.Filter(reason="rejected").matches(dead, now)
    assert not dlq.Filter(older_than=timedelta(0)).matches(
        dlq.DeadLetter("j2", "t", "unknown", 1, None, "", None, None, ""), now)


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("7d", 604800),
                                           ("1.5h", 5400)])
def test_parse_duration(text: str, seconds: int):
    assert dlq.parse_duration(text) == timedelta(seconds=seconds)


def test_parse_duration_refuses_garbage():
    with pytest.raises(Exception, match="not a duration"):
        dlq.parse_duration("soon")


def test_a_dead_letter_nested_past_the_recursion_limit_without_a_message_id_is_described():
    """Issue 12 item 3: one such dead letter made `importd dlq list` and `replay-dlq` exit
    with a RecursionError traceback, so no dead letter behind it could be replayed."""
    dead = dlq.describe(Raw({messages.TASK_HEADER: "test.record", "x-importd-reason": "not-json"},
                            body=b"[" * 300_000, properties={}))
    assert (dead.job_id, dead.reason) == ("?", "not-json")


def _utf8_text(value: Any) -> bool:
    try:
        (value if isinstance(value, str) else "").encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: Headers of a dead letter as anyone may publish them: importd's and RabbitMQ's names with
#: values of any AMQP type, lone surrogates (py-amqp decodes strings with surrogatepass).
_TEXTS = st.text(max_size=20) | st.sampled_from(["\ud800", "a\udfff", "2026-13-45"])
_HOSTILE_HEADERS = st.dictionaries(
    st.sampled_from([messages.TASK_HEADER, messages.ATTEMPT_HEADER, *messages.DEAD_HEADERS, "x-death", "other"]),
    hostile.AMQP_VALUES | _TEXTS | st.lists(st.dictionaries(
        st.sampled_from(["reason", "queue", "time", "exchange", "routing-keys", "count"]),
        hostile.AMQP_VALUES | _TEXTS), max_size=2), max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=hostile.BODIES, headers=_HOSTILE_HEADERS,
       message_id=st.none() | _TEXTS | st.binary(max_size=10) | st.integers())
def test_any_dead_letter_is_described_with_text_any_writer_takes(body: bytes, headers: dict[str, Any],
                                                                 message_id: Any):
    """Whatever a dead letter holds, describe() returns (never raises) and every text field
    encodes as UTF-8, so `dlq list` can print it and the API can answer it as JSON."""
    dead = dlq.describe(Raw(headers, body=body, properties={"message_id": message_id}))
    assert all(_utf8_text(v) for v in dead.as_dict().values())
    dlq.replay_id(dead)
    dlq.replay_headers(headers, keep_attempts=False, replay="r")
