"""A network partition between worker and broker, made with a TCP proxy inside the test."""

from __future__ import annotations

import time

from tests.support import report
from tests.support import tasks as test_tasks
from tests.support.infra import SERVICES, Broker, wait_for
from tests.support.proxy import Proxy


def test_partition_longer_than_heartbeats_is_detected_and_the_worker_goes_on(
        settings, broker: Broker, start_worker, tmp_path):
    """Protection proved: heartbeats answered by the connection's owner thread and the
    reconnect loop. Without heartbeat checks the worker would hang on a dead socket forever
    and never consume the job published after the partition."""
    vhost = settings.broker_url.rsplit("/", 1)[1]
    log = tmp_path / "runs.jsonl"
    with Proxy(SERVICES.host, SERVICES.amqp_port) as proxy, start_worker(
            "-Q", "default", "-c", "1", IMPORTD_HEARTBEAT_S="2",
            IMPORTD_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}") as w:
        w.wait_consuming()
        proxy.stall()
        wait_for(lambda: "broker connection lost" in w.output(), 30, what="heartbeat timeout noticed")
        time.sleep(1)  # keep the partition up a moment after the worker noticed it
        proxy.resume()
        wait_for(lambda: w.output().count('"consuming"') >= 2, 60, what="reconnected")
        broker.publish_job("test.record", {"log": str(log)})
        wait_for(lambda: len(test_tasks.runs(log)) == 1, 30)
    report.add(faults_injected=1, jobs_run=1, messages_stranded=sum(broker.depths().values()))
