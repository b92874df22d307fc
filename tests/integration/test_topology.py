"""Topology declared by the worker and ``importd declare``, checked on the broker itself."""

from __future__ import annotations

import subprocess
import sys

import pytest
from kombu import Queue

from importd.config import Settings
from importd.errors import TopologyMismatch
from importd.worker import retry, topology
from importd.worker.publisher import broker_connection
from tests.support import infra


def _vhost(settings: Settings) -> str:
    return settings.broker_url.rsplit("/", 1)[1]


def _queue_arguments(settings: Settings) -> dict[str, str]:
    out = infra.rabbitmqctl("list_queues", "-p", _vhost(settings), "name", "arguments", "--no-table-headers")
    return dict(line.split("\t", 1) for line in out.strip().splitlines())


def test_importd_declare_creates_every_queue_with_ttl_priority_and_dead_letter_settings(settings: Settings):
    out = subprocess.run([sys.executable, "-m", "importd", "declare"], env=infra.env_for(settings),
                         capture_output=True, text=True, cwd=infra.ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    queues = _queue_arguments(settings)
    assert '{"x-message-ttl",7200000}' in queues["import_queue"]
    assert '{"x-max-priority",10}' in queues["import_queue"]
    assert '{"x-dead-letter-exchange","dlx"}' in queues["import_queue"]
    assert '{"x-dead-letter-routing-key","import.failed"}' in queues["import_queue"]
    assert '{"x-message-ttl",3600000}' in queues["bulk_ops_queue"]
    assert '{"x-max-priority",5}' in queues["bulk_ops_queue"]
    assert '{"x-dead-letter-routing-key","bulk.failed"}' in queues["bulk_ops_queue"]
    assert '{"x-dead-letter-routing-key","default.failed"}' in queues["default"]
    assert '{"x-message-ttl",604800000}' in queues["failed_tasks"]
    for spec in topology.QUEUES:
        for step in range(1, retry.STEPS + 1):
            args = queues[topology.retry_queue_name(spec.name, step)]
            assert f'{{"x-message-ttl",{retry.step_ttl_ms(step)}}}' in args
            assert f'{{"x-dead-letter-exchange","{spec.exchange}"}}' in args
            assert f'{{"x-dead-letter-routing-key","{spec.routing_key}"}}' in args


def test_failed_tasks_is_bound_to_each_failed_key_explicitly(settings: Settings):
    out = infra.rabbitmqctl("list_bindings", "-p", _vhost(settings), "source_name", "destination_name",
                            "routing_key", "--no-table-headers")
    keys = {line.split("\t")[2] for line in out.splitlines() if "\tfailed_tasks\t" in line and line.startswith("dlx")}
    assert keys == {"import.failed", "bulk.failed", "default.failed"}


def _broker_topology(settings: Settings) -> tuple[dict[str, str], list[str], list[str]]:
    """What the broker holds for the vhost: queue arguments, bindings, exchanges."""
    bindings = infra.rabbitmqctl("list_bindings", "-p", _vhost(settings), "source_name", "destination_name",
                                 "routing_key", "arguments", "--no-table-headers")
    exchanges = infra.rabbitmqctl("list_exchanges", "-p", _vhost(settings), "name", "type", "durable",
                                  "arguments", "--no-table-headers")
    return _queue_arguments(settings), sorted(bindings.splitlines()), sorted(exchanges.splitlines())


def test_declaring_twice_is_a_no_op(settings: Settings, broker: infra.Broker):
    """A second declare changes nothing on the broker: same queues, arguments, bindings and
    exchanges, and a message already queued is still there (nothing deleted and re-made)."""
    with broker_connection(settings) as conn:
        topology.declare(conn)
        broker.publish_raw(b"{}", {}, queue="default")
        before = _broker_topology(settings)
        topology.declare(conn)
    assert _broker_topology(settings) == before
    assert broker.depth("default") == 1
    broker.purge_all()


def test_existing_queue_with_other_arguments_names_the_queue_and_argument(tmp_path):
    vhost = f"importd-mismatch-{infra.run_id()}"
    infra.create_vhost(vhost)
    try:
        settings = Settings(broker_url=infra.SERVICES.broker_url(vhost))
        with broker_connection(settings) as conn:
            Queue("import_queue", durable=True, queue_arguments={"x-message-ttl": 100}).bind(conn.channel()).declare()
            with pytest.raises(TopologyMismatch) as err:
                topology.declare(conn)
        assert "import_queue" in str(err.value) and "x-message-ttl" in str(err.value)
        out = subprocess.run([sys.executable, "-m", "importd", "declare"], capture_output=True, text=True,
                             env=infra.env_for(settings), cwd=infra.ROOT, timeout=60)
        assert out.returncode == 78
        assert "import_queue" in out.stderr and "x-message-ttl" in out.stderr
        worker = subprocess.run([sys.executable, "-m", "importd", "worker", "-c", "1"], capture_output=True,
                                text=True, env=infra.env_for(settings), cwd=infra.ROOT, timeout=60)
        assert worker.returncode == 78
        assert "x-message-ttl" in worker.stderr + worker.stdout
    finally:
        infra.delete_vhost(vhost)
