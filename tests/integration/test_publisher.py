"""Publishing: persistent, confirmed, mandatory; a publish nothing receives raises."""

import threading
import uuid

import pytest
from kombu import Producer

from importd.config import Settings
from importd.errors import PublishError
from importd.worker import messages
from importd.worker.publisher import Publisher, broker_connection, send
from tests.support import infra
from tests.support.infra import Broker, wait_for


def test_published_job_is_persistent_with_id_headers_and_priority(settings: Settings, broker: Broker):
    publisher = Publisher(settings)
    try:
        publisher.publish(messages.Job("job-1", "import.csv", {"file": "a.csv"}), priority=7)
    finally:
        publisher.close()
    (msg,) = broker.get_all("import_queue")
    assert msg.properties["delivery_mode"] == 2
    assert msg.properties["message_id"] == "job-1"
    assert msg.properties["priority"] == 7
    assert msg.properties["content_type"] == "application/json"
    assert msg.headers[messages.TASK_HEADER] == "import.csv"
    assert msg.headers[messages.ATTEMPT_HEADER] == 1


def test_unroutable_publish_raises_instead_of_vanishing(settings: Settings):
    with broker_connection(settings) as conn:
        with pytest.raises(PublishError, match="NO_ROUTE"):
            send(Producer(conn.channel()), b"{}", exchange="import_tasks", routing_key="nobody.listens",
                 headers={}, message_id="x")


def test_publisher_pool_is_bounded_to_ten_connections(settings: Settings, broker: Broker):
    """Forty threads publishing at once open at most ten connections (counted on the broker)."""
    vhost = settings.broker_url.rsplit("/", 1)[1]

    def connections() -> int:
        return infra.rabbitmqctl("list_connections", "vhost", "--no-table-headers").split().count(vhost)

    baseline = connections()  # the broker fixture's own
    publisher = Publisher(settings)
    start = threading.Barrier(40)

    def publish() -> None:
        start.wait()
        publisher.publish(messages.Job(uuid.uuid4().hex, "import.csv", {"file": "a.csv"}))

    try:
        threads = [threading.Thread(target=publish) for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        opened = wait_for(lambda: connections() - baseline, 10, what="the pool's connections listed")
        assert 1 <= opened <= 10, opened
        assert broker.depth("import_queue") == 40  # every publish went through
    finally:
        publisher.close()
        broker.purge_all()
