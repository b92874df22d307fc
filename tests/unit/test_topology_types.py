"""Queue types in the topology table: quorum arguments, priorities per broker version, and
how a 406 from RabbitMQ becomes a message naming the queue and both types."""

from __future__ import annotations

import pytest

from importd.config import Settings
from importd.worker import topology


def test_quorum_queues_carry_delivery_limit_and_at_least_once_but_no_priority():
    spec = topology.queue_spec("import_queue")
    args = spec.arguments(topology.QUORUM)
    assert args["x-queue-type"] == "quorum"
    assert args["x-delivery-limit"] == topology.DELIVERY_LIMIT
    assert args["x-dead-letter-strategy"] == "at-least-once"
    assert args["x-overflow"] == "reject-publish"
    assert "x-max-priority" not in args
    assert spec.arguments(topology.CLASSIC)["x-max-priority"] == 10
    assert "x-queue-type" not in spec.arguments(topology.CLASSIC)  # existing classic queues stay equivalent


def test_failed_tasks_has_no_delivery_limit_on_quorum():
    args = topology.dlq_entity(topology.QUORUM).queue_arguments
    assert args["x-queue-type"] == "quorum" and "x-delivery-limit" not in args


@pytest.mark.parametrize(("version", "support"), [((3, 10, 8), "none"), ((3, 13, 7), "none"),
                                                  ((4, 0, 5), "two-levels"), ((4, 2, 0), "two-levels"),
                                                  ((4, 3, 0), "levels")])
def test_priority_support_by_rabbitmq_version(version, support):
    assert topology.priority_support(version) == support


@pytest.mark.parametrize(("text", "queue_type", "existing"), [
    ("PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for queue 'q' in vhost 'v': "
     "received none but current is the value '5' of type 'signedint'", "quorum", "classic"),
    ("PRECONDITION_FAILED - inequivalent arg 'x-overflow' for queue 'q' in vhost 'v': "
     "received the value 'reject-publish' of type 'longstr' but current is none", "quorum", "classic"),
    ("PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-strategy' for queue 'q' in vhost 'v': "
     "received none but current is the value 'at-least-once' of type 'longstr'", "classic", "quorum"),
])
def test_a_type_mismatch_names_the_queue_and_both_types(text, queue_type, existing):
    message = str(topology._translate(Exception(text), "q", queue_type))
    assert message.startswith(f"queue 'q' exists as a {existing} queue")
    assert f"declares it {queue_type}" in message and topology.MIGRATION_DOC in message


def test_an_argument_mismatch_of_the_same_type_names_the_argument():
    text = ("PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost 'v': "
            "received the value '7200000' of type 'signedint' but current is the value '100' of type 'long'")
    message = str(topology._translate(Exception(text), "q", topology.CLASSIC))
    assert message.startswith("queue 'q' exists with x-message-ttl='100' but importd declares x-message-ttl='7200000'")


def test_queue_type_setting_accepts_only_classic_and_quorum():
    assert Settings.from_env({"IMPORTD_QUEUE_TYPE": "quorum"}).queue_type == "quorum"
    with pytest.raises(ValueError, match="IMPORTD_QUEUE_TYPE"):
        Settings.from_env({"IMPORTD_QUEUE_TYPE": "stream"})


@pytest.mark.parametrize("version", [(3, 10, 8), (3, 13, 7)])
def test_no_policy_is_asked_for_failed_tasks_on_rabbitmq_3(version):
    assert topology.dlq_delivery_limit_advice(version) is None


@pytest.mark.parametrize("version", [(4, 0, 0), (4, 1, 2), (4, 3, 0)])
def test_rabbitmq_4_is_told_the_policy_that_lifts_failed_tasks_default_delivery_limit(version):
    advice = topology.dlq_delivery_limit_advice(version)
    assert advice is not None
    assert "'^failed_tasks$'" in advice and '"delivery-limit": -1' in advice and "quorum_queues" in advice


def test_what_priorities_mean_is_said_once_per_broker_version_in_a_process():
    """The note is kept by a cache on the version, not a module flag set through ``global``:
    a worker that meets another broker version (a rolling upgrade) says it again."""
    topology._log_priority.cache_clear()
    for version in [(3, 13, 7), (3, 13, 7), (4, 1, 2), (4, 3, 0), (4, 1, 2)]:
        topology._log_priority(version)
    info = topology._log_priority.cache_info()
    assert (info.misses, info.hits) == (3, 2)
