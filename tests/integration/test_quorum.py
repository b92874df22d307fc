"""Quorum queues on a real three-node RabbitMQ cluster of this test run's own.

The cluster is ``scripts/rabbitmq-cluster.sh`` (nodes c<BASE>n1..n3@localhost, AMQP on
BASE..BASE+2), started once for the session and stopped after; the machine's node on 5672 is
never touched. It must start: a cluster that cannot start fails these tests, it never skips
them. Every importd client here is given all three nodes (kombu's failover URL ``a;b;c``).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Queue

from importd.config import Settings
from importd.worker import messages, retry, topology
from importd.worker.publisher import Publisher, broker_connection
from tests.support import infra
from tests.support import tasks as test_tasks
from tests.support.cluster import Cluster, running_cluster
from tests.support.infra import Broker, wait_for

#: First AMQP port of the test cluster (its nodes use BASE, BASE+1, BASE+2; distribution +20000).
BASE_PORT = 5681
QUORUM_ENV = {"IMPORTD_QUEUE_TYPE": "quorum"}


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    with running_cluster(BASE_PORT) as c:
        yield c


@pytest.fixture
def qsettings(cluster: Cluster, settings: Settings) -> Settings:
    """This run's database and Redis, a fresh vhost on the cluster, quorum queues declared."""
    s = dataclasses.replace(settings, broker_url=cluster.url(cluster.vhost()), queue_type="quorum")
    with broker_connection(s) as conn:
        topology.declare(conn, s.queue_type)
    return s


@pytest.fixture
def qbroker(qsettings: Settings) -> Iterator[Broker]:
    b = Broker(qsettings)
    yield b
    b.close()


def _vhost(settings: Settings) -> str:
    return settings.broker_url.split(";")[0].rsplit("/", 1)[1]


def _queues(cluster: Cluster, vhost: str, node: int = 1) -> dict[str, tuple[str, str]]:
    """``rabbitmqctl list_queues name type arguments`` as {name: (type, arguments)}."""
    out = cluster.ctl("list_queues", "-p", vhost, "name", "type", "arguments", "--no-table-headers", node=node)
    rows = (line.split("\t") for line in out.strip().splitlines())
    return {name: (kind, args) for name, kind, args in rows}


def _run(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "importd", *args], capture_output=True, text=True,
                          env=infra.env_for(settings, **env), cwd=infra.ROOT, timeout=120)


def test_importd_declare_with_quorum_type_makes_every_queue_quorum_with_delivery_limit_and_at_least_once(
        cluster: Cluster, settings: Settings):
    s = dataclasses.replace(settings, broker_url=cluster.url(cluster.vhost()))
    out = _run(s, "declare", **QUORUM_ENV)
    assert out.returncode == 0, out.stderr
    queues = _queues(cluster, _vhost(s), node=1)  # asked of another member than the one declared on
    assert set(queues) == set(topology.all_queue_names())
    for name, (kind, args) in queues.items():
        assert kind == "quorum", (name, kind)
        assert '{"x-queue-type","quorum"}' in args, (name, args)
        assert '{"x-dead-letter-strategy","at-least-once"}' in args, (name, args)
        assert '{"x-overflow","reject-publish"}' in args, (name, args)
        assert "x-max-priority" not in args, (name, args)  # RabbitMQ 3.x refuses it on quorum queues
        # failed_tasks has no delivery limit: `importd dlq` lists by fetching unacked, and past a
        # limit a dead letter with nowhere to go would be dropped.
        limit = f'{{"x-delivery-limit",{topology.DELIVERY_LIMIT}}}'
        assert (limit in args) == (name != topology.DLQ), (name, args)
    assert '{"x-dead-letter-exchange","dlx"}' in queues["import_queue"][1]
    assert '{"x-message-ttl",7200000}' in queues["import_queue"][1]
    assert f'{{"x-message-ttl",{topology.DLQ_TTL_MS}}}' in queues[topology.DLQ][1]
    assert f'{{"x-message-ttl",{retry.step_ttl_ms(2)}}}' in queues["default.retry.2"][1]


def test_job_on_quorum_queues_retries_through_delay_queues_then_succeeds(
        qbroker: Broker, qsettings: Settings, tmp_path: Path):
    log = tmp_path / "runs.jsonl"
    with infra.worker(qsettings, tmp_path, "-Q", "default", "-c", "1", **QUORUM_ENV) as w:
        w.wait_consuming()
        qbroker.publish_job("test.flaky", {"log": str(log), "fail_times": 2})
        wait_for(lambda: "job succeeded" in w.output(), 60, what="job succeeded")
        wait_for(lambda: all(d == 0 for d in qbroker.depths().values()), 30, what="all queues empty")
    runs = test_tasks.runs(log)
    assert [r["attempt"] for r in runs] == [1, 2, 3]
    gaps = [runs[i + 1]["t"] - runs[i]["t"] for i in range(2)]
    # Each retry waited in its quorum delay queue at least its step's delay (queue TTL and the
    # message's own expiration both work on quorum queues of RabbitMQ 3.10+).
    for step, gap in zip((1, 2), gaps, strict=True):
        assert gap >= retry.step_delay_s(step) - 0.1, (step, gap)


def test_poison_job_on_quorum_queues_ends_in_failed_tasks(qbroker: Broker, qsettings: Settings, tmp_path: Path):
    log = tmp_path / "runs.jsonl"
    with infra.worker(qsettings, tmp_path, "-Q", "default", "-c", "1", **QUORUM_ENV) as w:
        w.wait_consuming()
        job_id = qbroker.publish_job("test.always_fails", {"log": str(log)})
        wait_for(lambda: qbroker.depth(topology.DLQ) == 1, 60, what="dead letter")
    assert len(test_tasks.runs(log)) == 4
    (dead,) = qbroker.get_all(topology.DLQ)
    assert dead.properties["message_id"] == job_id
    assert dead.headers["x-importd-reason"] == "max-retries"


def test_broker_dead_letters_a_message_redelivered_past_the_delivery_limit_to_failed_tasks(qbroker: Broker):
    """The second poison guard: a message returned unacked again and again (as when it kills
    every worker that takes it) is moved to failed_tasks by the broker itself."""
    job_id = qbroker.publish_job("test.record", {"log": "/dev/null"})
    channel = qbroker.channel()
    for _ in range(topology.DELIVERY_LIMIT + 1):
        msg = wait_for(lambda: channel.basic_get("default", no_ack=False), 10, what="the message back")
        channel.basic_reject(msg.delivery_tag, requeue=True)
    wait_for(lambda: qbroker.depth(topology.DLQ) == 1, 30, what="the broker dead-lettering it")
    assert qbroker.depth("default") == 0
    (dead,) = qbroker.get_all(topology.DLQ)
    assert dead.properties["message_id"] == job_id
    assert dead.headers["x-first-death-reason"] == "delivery_limit"


@pytest.mark.parametrize(("existing", "declared"), [("classic", "quorum"), ("quorum", "classic")])
def test_declaring_the_other_queue_type_over_existing_queues_exits_78_naming_the_queue(
        cluster: Cluster, settings: Settings, existing: str, declared: str):
    s = dataclasses.replace(settings, broker_url=cluster.url(cluster.vhost()))
    with broker_connection(s) as conn:
        # One queue of the other type is enough: importd must refuse and name it.
        args = topology.queue_spec("bulk_ops_queue").arguments(existing)
        Queue("bulk_ops_queue", durable=True, queue_arguments=args).bind(conn.channel()).declare()
    env = {"IMPORTD_QUEUE_TYPE": declared}
    out = _run(s, "declare", **env)
    assert out.returncode == 78, out.stdout + out.stderr
    assert "'bulk_ops_queue'" in out.stderr
    assert f"exists as a {existing} queue" in out.stderr and f"declares it {declared}" in out.stderr
    worker = _run(s, "worker", "-c", "1", **env)
    assert worker.returncode == 78
    assert "'bulk_ops_queue'" in worker.stderr + worker.stdout
    assert _queues(cluster, _vhost(s))["bulk_ops_queue"][0] == existing  # left as it was


def _tail_queue_on(cluster: Cluster, vhost: str, node: int) -> bool:
    return any(name.startswith("importd.events.tail.") for name in _queues(cluster, vhost, node))


def test_worker_publisher_and_events_tail_fail_over_when_their_node_stops(
        cluster: Cluster, qsettings: Settings, qbroker: Broker, tmp_path: Path):
    """Everything connects to node 1 first (the first URL); stopping node 1's RabbitMQ
    application moves the worker, the publisher, `importd events` and later commands to another member, the
    quorum queues elect leaders there, and jobs published before and after all run."""
    vhost = _vhost(qsettings)
    before = [messages.Job(job_id=f"before-{i}", task="test.record", args={"log": str(tmp_path / f"b{i}")})
              for i in range(3)]
    after = [messages.Job(job_id=f"after-{i}", task="test.record", args={"log": str(tmp_path / f"a{i}")})
             for i in range(3)]
    publisher = Publisher(qsettings)
    tail = subprocess.Popen([sys.executable, "-m", "importd", "events", "--json", "--job", after[-1].job_id,
                             "-k", "job.succeeded.#", "--count", "1", "--timeout", "240"],
                            env=infra.env_for(qsettings), cwd=infra.ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        with infra.worker(qsettings, tmp_path, "-Q", "default", "-c", "1", **QUORUM_ENV) as w:
            w.wait_consuming()
            wait_for(lambda: _tail_queue_on(cluster, vhost, 1), 30, what="the events tail consuming")
            for job in before:
                publisher.publish(job)
            wait_for(lambda: all(test_tasks.runs(j.args["log"]) for j in before), 60, what="jobs before the stop")
            consuming = w.output().count('"consuming"')
            cluster.ctl("stop_app", node=0)
            try:
                wait_for(lambda: w.output().count('"consuming"') > consuming, 120, what="the worker reconnecting")
                wait_for(lambda: _tail_queue_on(cluster, vhost, 1), 120, what="the events tail reconnecting")
                for job in after:
                    publisher.publish(job)
                wait_for(lambda: all(test_tasks.runs(j.args["log"]) for j in after), 120, what="jobs after the stop")
                qbroker.reconnect()  # its connection was to node 1
                command = _run(qsettings, "declare", **QUORUM_ENV)  # an importd command, node 1 down
                assert command.returncode == 0, command.stderr
                out, err = tail.communicate(timeout=120)
                assert tail.returncode == 0, err
                assert after[-1].job_id in out
                depths = {name: qbroker.depth(name) for name in topology.all_queue_names()}
                assert all(d == 0 for d in depths.values()), depths
            finally:
                cluster.ctl("start_app", node=0)
    finally:
        publisher.close()
        if tail.poll() is None:
            tail.kill()
            tail.communicate()
    for job in before + after:
        assert len(test_tasks.runs(job.args["log"])) == 1, job.job_id  # each ran, once
