"""A network partition between worker and broker longer than the heartbeat timeout, made by a
proxy inside the test."""

from __future__ import annotations

from tests.faults.conftest import partition_until_both_ends_gave_up, stranded_after_stop
from tests.faults.evidence import REDELIVERY, EventLog, Evidence
from tests.support import report
from tests.support import tasks as test_tasks
from tests.support.infra import SERVICES, Broker, wait_for
from tests.support.proxy import Proxy


def test_partition_longer_than_heartbeats_is_detected_and_the_worker_goes_on(
        settings, broker: Broker, events: EventLog, start_worker, tmp_path):
    """Protection proved: heartbeats answered by the connection's owner thread and the
    reconnect loop. Without heartbeat checks the worker would hang on a dead socket forever:
    it would never reconnect, the job running across the partition would not come back as a
    counted attempt, and the job published after the partition would never run."""
    vhost = settings.broker_url.rsplit("/", 1)[1]
    log, after = tmp_path / "runs.jsonl", tmp_path / "after.jsonl"
    ev = Evidence("partition (one job)", settings)
    with Proxy(SERVICES.host, SERVICES.amqp_port) as proxy, start_worker(
            "-Q", "default", "-c", "1", IMPORTD_HEARTBEAT_S="2",
            IMPORTD_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}") as w:
        w.wait_consuming()
        job = broker.publish_job("test.sleep", {"log": str(log), "seconds": 3})
        wait_for(lambda: test_tasks.runs(log), 30, what="the job running")
        in_flight = [r["event"] for r in test_tasks.runs(log)] == ["run"]  # read as the partition begins
        partition_until_both_ends_gave_up(proxy)
        if in_flight:
            ev.hit("partition", [], "attempt 1 running")
        else:
            ev.miss("partition", "the job had ended")
        wait_for(lambda: any(r["event"] == "done" and int(r["attempt"]) >= 2 for r in test_tasks.runs(log)), 60,
                 what="the job's redelivery run to the end")
        broker.publish_job("test.record", {"log": str(after)})
        wait_for(lambda: len(test_tasks.runs(after)) == 1, 30, what="the job published after the partition")
        stranded = stranded_after_stop(broker, w)
    ev.observe(events, [job])
    report.add(jobs_run=2, messages_stranded=stranded)
    ev.record()
    ev.require(REDELIVERY)
    assert stranded == 0


def test_stranded_count_sees_a_delivery_a_worker_holds_unacked(broker: Broker, start_worker, tmp_path):
    """The audit's 'stranded' is ready + unacked: a delivery held by a worker that stopped is
    counted (the broker requeues it once the worker's connection is gone), where counting
    ready messages alone would read 0 while the worker holds it."""
    log = tmp_path / "runs.jsonl"
    with start_worker("-Q", "default", "-c", "1") as w:
        w.wait_consuming()
        broker.publish_job("test.sleep", {"log": str(log), "seconds": 60})
        wait_for(lambda: test_tasks.runs(log), 30, what="the job running (its delivery unacked)")
        assert broker.depth("default") == 0  # invisible to a count of ready messages
        assert stranded_after_stop(broker, w, kill=True) == 1  # killed: a graceful stop would finish the job
    broker.purge_all()
