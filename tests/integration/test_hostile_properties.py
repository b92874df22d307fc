"""Issue 12 item 2, deliveries whose *properties* broke the AMQP client, against a real worker.

py-amqp decoded a short-string property that is not UTF-8 (``message_id``, ``content_type``,
...) strictly and raised inside ``drain_events``; kombu inflated the body of a delivery with a
``compression`` header and re-raised when it was not compressed. Either way the child exited
before it had a message to dead-letter, the broker handed the delivery to the next child,
and the queue behind it stalled. Each such delivery must end in failed_tasks with its
reason while the job behind it runs and no child exits.
"""

from __future__ import annotations

import zlib
from typing import Any

import amqp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.worker import messages, topology
from tests.support import tasks as test_tasks
from tests.support.hostile import is_utf8
from tests.support.infra import Broker, wait_for

TASK = {messages.TASK_HEADER: "test.record"}
#: Short-string properties py-amqp writes as given when given bytes.
SHORT_STRINGS = ("content_type", "content_encoding", "correlation_id", "reply_to", "message_id", "type", "app_id",
                 "cluster_id")
BODY = b'{"job_id": "hp", "args": {}}'
#: A body test.record runs (it appends a line to its ``log``).
RUNNABLE = b'{"job_id": "hp", "args": {"log": "/dev/null"}}'


def _send(broker: Broker, body: bytes, headers: dict[str, Any], **properties: Any) -> None:
    spec = topology.queue_spec("default")
    message = amqp.Message(body, application_headers=headers, delivery_mode=2, **properties)
    broker.channel().basic_publish(message, exchange=spec.exchange, routing_key=spec.routing_key)


#: (properties, headers, body) of deliveries the client libraries could not turn into a message.
CASES: list[tuple[dict[str, Any], dict[str, Any], bytes]] = [
    ({"message_id": b"\xff\xfe"}, TASK, BODY),
    ({"content_type": b"application/\xc3("}, TASK, BODY),
    ({"correlation_id": b"\x80", "app_id": b"\xed\xa0"}, TASK, BODY),
    ({}, {**TASK, "compression": "application/x-gzip"}, BODY),  # not gzip: kombu's inflate raised
    ({}, {**TASK, "compression": "zlib"}, zlib.compress(BODY)),  # inflatable: still never inflated or run
]


def test_undecodable_properties_and_compressed_bodies_are_dead_lettered_and_the_worker_goes_on(
        broker: Broker, start_worker, tmp_path):
    log = tmp_path / "runs.jsonl"
    with start_worker("-Q", "default", "-c", "1") as w:
        w.wait_consuming()
        children = w.child_pids()
        for props, headers, body in CASES:
            _send(broker, body, headers, **props)
        broker.publish_job("test.record", {"log": str(log)})
        wait_for(lambda: len(test_tasks.runs(log)) == 1, 60, what="the good job behind the hostile ones")
        wait_for(lambda: broker.depth("failed_tasks") == len(CASES), 20, what="every hostile one dead-lettered")
        assert w.child_pids() == children and "child died" not in w.output(), w.output()[-3000:]
    dead = broker.get_all("failed_tasks")
    assert [m.headers["x-importd-reason"] for m in dead] == ["bad-properties"] * len(CASES)
    assert [bytes(m.body) for m in dead] == [c[2] for c in CASES]  # set aside whole, nothing inflated or run


def test_any_bytes_in_any_short_string_property_never_cost_a_child(broker: Broker, start_worker, tmp_path):
    """The same, drawn by hypothesis: batches of deliveries with arbitrary bytes in arbitrary
    short-string properties, then a good job. Each hostile one that py-amqp cannot decode is
    dead-lettered as bad-properties; the ones it can run (test.record ignores its args)."""
    with start_worker("-Q", "default", "-c", "1") as w:
        w.wait_consuming()
        children = w.child_pids()
        batches = 0

        @settings(max_examples=3, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(st.lists(st.dictionaries(st.sampled_from(SHORT_STRINGS), st.binary(min_size=1, max_size=30),
                                        min_size=1), min_size=3, max_size=12))
        def batch_then_good_job(batch: list[dict[str, bytes]]) -> None:
            nonlocal batches
            batches += 1
            bad = sum(1 for props in batch if not all(is_utf8(v) for v in props.values()))
            before = broker.depth("failed_tasks")
            for props in batch:
                _send(broker, RUNNABLE, TASK, **props)
            log = tmp_path / f"good-{batches}.jsonl"
            broker.publish_job("test.record", {"log": str(log)})
            wait_for(lambda: len(test_tasks.runs(log)) == 1, 60, what="the good job behind the batch")
            wait_for(lambda: broker.depth("failed_tasks") - before >= bad, 20, what="the undecodable dead-lettered")
            assert w.child_pids() == children, w.output()[-3000:]

        batch_then_good_job()
        assert "child died" not in w.output()
