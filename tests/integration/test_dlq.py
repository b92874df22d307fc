"""``importd replay-dlq`` and ``importd dlq`` on the real broker, with a real worker."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

from kombu import Producer

from importd.config import Settings
from importd.worker import messages, topology
from importd.worker.publisher import send
from tests.support import ops_tasks
from tests.support.cli import OPS_TASK_MODULES, popen_cli, run_cli
from tests.support.infra import Broker, wait_for

TASK = "ops.fail_times"


def _expire_in_import_queue(broker: Broker, directory: Path, count: int) -> list[str]:
    """Jobs that RabbitMQ dead-letters itself: a 1 ms TTL in a queue nobody consumes."""
    ids = []
    for _ in range(count):
        job = messages.Job(uuid.uuid4().hex, TASK, {"dir": str(directory), "fail_times": 0})
        spec = topology.queue_spec("import_queue")
        send(Producer(broker.channel()), job.body(), exchange=spec.exchange, routing_key=spec.routing_key,
             headers=job.headers(), message_id=job.job_id, expiration_ms=1)
        ids.append(job.job_id)
    return ids


def _reject_from_default(broker: Broker, directory: Path, count: int) -> list[str]:
    """Jobs a consumer rejected without requeue: RabbitMQ dead-letters them with x-death."""
    ids = [broker.publish_job(TASK, {"dir": str(directory), "fail_times": 0}) for _ in range(count)]
    channel = broker.channel()
    for _ in range(count):
        msg = channel.basic_get("default", no_ack=False)
        channel.basic_reject(msg.delivery_tag, requeue=False)
    return ids


def _listing(settings: Settings, *filters: str) -> list[dict[str, object]]:
    out = run_cli(settings, "replay-dlq", "--dry-run", "--json", *filters)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_replay_moves_importd_and_rabbitmq_dead_letters_back_and_survives_sigkill(
        settings: Settings, broker: Broker, start_worker, tmp_path: Path):
    expired = _expire_in_import_queue(broker, tmp_path, 10)
    rejected = _reject_from_default(broker, tmp_path, 10)
    wait_for(lambda: broker.depth("failed_tasks") == 20, 20, what="20 dead-lettered by RabbitMQ")
    with start_worker("-Q", "default,import_queue", "-c", "2", IMPORTD_TASK_MODULES=OPS_TASK_MODULES) as w:
        w.wait_consuming(2)
        failed = [broker.publish_job(TASK, {"dir": str(tmp_path), "fail_times": 1}) for _ in range(10)]
        wait_for(lambda: broker.depth("failed_tasks") == 30, 30, what="30 dead letters")
        everyone = expired + rejected + failed

        listing = _listing(settings)
        assert sorted(d["job_id"] for d in listing) == sorted(everyone)
        by_id = {d["job_id"]: d for d in listing}
        assert {by_id[j]["reason"] for j in expired} == {"expired"}
        assert {by_id[j]["reason"] for j in rejected} == {"rejected"}
        assert {by_id[j]["reason"] for j in failed} == {"max-retries"}
        assert all("simulated failure" in str(by_id[j]["error"]) for j in failed)
        assert {(by_id[j]["exchange"], by_id[j]["routing_key"]) for j in expired} == {("import_tasks", "import.csv")}
        assert {(by_id[j]["exchange"], by_id[j]["routing_key"]) for j in rejected + failed} == {("default", "default")}
        assert all(d["died_at"] for d in listing)
        assert len(_listing(settings, "--reason", "expired")) == 10
        assert len(_listing(settings, "--older-than", "1h")) == 0
        assert broker.depth("failed_tasks") == 30  # listing took nothing

        one = failed[3]
        out = run_cli(settings, "replay-dlq", "--job", one)
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("moved") == 1
        wait_for(lambda: ops_tasks.completed(tmp_path, one), 20, what="replayed job completes")
        assert ops_tasks.runs(tmp_path, one)[-1]["attempt"] == 1  # attempt count reset
        rest = [d["job_id"] for d in listing if d["job_id"] != one]
        assert [d["job_id"] for d in _listing(settings)] == rest  # untouched, in their order

        slow = popen_cli(settings, "replay-dlq", "--rate", "10")
        assert slow.stdout is not None
        moved = 0
        while moved < 10:
            line = slow.stdout.readline()
            assert line, slow.stderr.read() if slow.stderr else ""
            moved += line.startswith("moved")
        slow.send_signal(signal.SIGKILL)
        slow.wait(10)
        left = broker.depth("failed_tasks")
        assert 0 < left < 29, left

        out = run_cli(settings, "replay-dlq")
        assert out.returncode == 0, out.stderr
        wait_for(lambda: all(ops_tasks.completed(tmp_path, j) for j in everyone), 60, what="every job completes")
        wait_for(lambda: all(d == 0 for d in broker.depths().values()), 20, what="all queues empty")
        assert w.proc.poll() is None


def test_dlq_purge_needs_yes_and_deletes_only_what_matches(settings: Settings, broker: Broker, tmp_path: Path):
    expired = _expire_in_import_queue(broker, tmp_path, 3)
    rejected = _reject_from_default(broker, tmp_path, 2)
    wait_for(lambda: broker.depth("failed_tasks") == 5, 20, what="5 dead letters")

    out = run_cli(settings, "dlq", "purge", "--reason", "rejected")
    assert out.returncode == 2 and "--yes" in out.stderr
    assert broker.depth("failed_tasks") == 5

    out = run_cli(settings, "dlq", "purge", "--reason", "rejected", "--yes")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("purged") == 2
    remaining = [d["job_id"] for d in _listing(settings)]
    assert remaining == expired and not set(rejected) & set(remaining)


def test_keep_attempts_keeps_the_attempt_header_and_limit_bounds_the_move(
        settings: Settings, broker: Broker, tmp_path: Path):
    expired = _expire_in_import_queue(broker, tmp_path, 3)
    wait_for(lambda: broker.depth("failed_tasks") == 3, 20, what="3 dead letters")
    # A dead letter whose attempt header says 3: --keep-attempts must carry it back.
    channel = broker.channel()
    raw = channel.basic_get("failed_tasks", no_ack=False)
    headers = dict(raw.headers, **{messages.ATTEMPT_HEADER: 3})
    send(Producer(channel), raw.body, exchange=topology.DLX, routing_key="import.failed", headers=headers,
         message_id=raw.properties["message_id"])
    channel.basic_ack(raw.delivery_tag)

    out = run_cli(settings, "replay-dlq", "--keep-attempts", "--limit", "2")
    assert out.returncode == 0, out.stderr
    assert broker.depth("failed_tasks") == 1 and broker.depth("import_queue") == 2
    out = run_cli(settings, "replay-dlq", "--keep-attempts")
    assert out.returncode == 0, out.stderr
    back = {m.properties["message_id"]: m for m in broker.get_all("import_queue")}
    assert sorted(back) == sorted(expired)
    attempts = sorted(int(m.headers[messages.ATTEMPT_HEADER]) for m in back.values())
    assert attempts == [1, 1, 3]
    for m in back.values():
        assert not any(k.startswith("x-death") for k in m.headers)
        assert "expiration" not in m.properties  # the 1 ms TTL is not carried back


def test_a_dead_letter_whose_origin_is_gone_is_left_in_place_and_the_rest_moves(
        settings: Settings, broker: Broker, tmp_path: Path):
    producer = Producer(broker.channel())
    for job_id, exchange in (("gone-1", "no.such.exchange"), ("ok-1", "default")):
        job = messages.Job(job_id, TASK, {"dir": str(tmp_path)})
        headers = dict(job.headers(), **{"x-importd-reason": "max-retries", "x-importd-attempts": 4,
                                         "x-importd-original-exchange": exchange,
                                         "x-importd-original-routing-key": "default"})
        send(producer, job.body(), exchange=topology.DLX, routing_key="default.failed", headers=headers,
             message_id=job_id)
    out = run_cli(settings, "replay-dlq")
    assert out.returncode == 1
    assert "skipped gone-1" in out.stdout and "moved   ok-1" in out.stdout
    assert [m.properties["message_id"] for m in broker.get_all("failed_tasks")] == ["gone-1"]
    assert [m.properties["message_id"] for m in broker.get_all("default")] == ["ok-1"]
