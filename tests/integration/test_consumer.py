"""The consumer loop on the real broker: acks, retries through delay queues, dead letters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from importd import keys
from importd.config import Settings
from importd.worker import messages, retry, topology
from tests.support import limit_tasks
from tests.support import tasks as test_tasks
from tests.support.infra import Broker, rabbitmqctl, wait_for


def _all_empty(broker: Broker, but: str | None = None) -> bool:
    return all(depth == 0 for name, depth in broker.depths().items() if name != but)


def test_transient_failures_retry_with_backoff_then_succeed_once(broker: Broker, start_worker, tmp_path: Path):
    log = tmp_path / "runs.jsonl"
    with start_worker("-Q", "default", "-c", "1") as w:
        w.wait_consuming()
        broker.publish_job("test.flaky", {"log": str(log), "fail_times": 2})
        delay_queues = [topology.retry_queue_name("default", step) for step in range(1, retry.STEPS + 1)]
        held: list[str] = []  # the delay queues that held the message, in order

        def three_runs() -> bool:
            for name in delay_queues:
                if broker.depth(name) and (not held or held[-1] != name):
                    held.append(name)
            return len(test_tasks.runs(log)) == 3

        wait_for(three_runs, 40, interval=0.05, what="three runs")
        wait_for(lambda: "job succeeded" in w.output(), 10)
        wait_for(lambda: _all_empty(broker), 10, what="all queues empty")
    runs = test_tasks.runs(log)
    assert [r["attempt"] for r in runs] == [1, 2, 3]
    gaps = [runs[i + 1]["t"] - runs[i]["t"] for i in range(2)]
    for step, gap in zip((1, 2), gaps, strict=False):
        assert gap >= retry.step_delay_s(step) - 0.1, (step, gap)  # waited at least its step's delay
    # No upper bound in seconds: each wait was made in its own step's delay queue (seen holding
    # the message, each for at least its step's delay), not a longer step's.
    assert held == delay_queues[:2], held
    assert w.output().count("job succeeded") == 1


def test_always_failing_task_ends_as_one_message_in_failed_tasks_after_four_runs(
        broker: Broker, start_worker, tmp_path: Path):
    log = tmp_path / "runs.jsonl"
    with start_worker("-Q", "default", "-c", "1") as w:
        w.wait_consuming()
        job_id = broker.publish_job("test.always_fails", {"log": str(log)})
        wait_for(lambda: broker.depth("failed_tasks") == 1, 40, what="dead letter")
    assert len(test_tasks.runs(log)) == 4
    assert _all_empty(broker, but="failed_tasks")
    (dead,) = broker.get_all("failed_tasks")
    headers = dead.headers
    assert dead.properties["message_id"] == job_id
    assert headers["x-importd-attempts"] == 4
    assert "simulated connection loss" in headers["x-importd-error"]
    assert headers["x-importd-original-exchange"] == "default"
    assert headers["x-importd-original-routing-key"] == "default"
    assert headers["x-importd-original-queue"] == "default"
    assert headers["x-importd-reason"] == "max-retries"


def test_permanent_failure_is_acked_without_retry(broker: Broker, start_worker, tmp_path: Path):
    log = tmp_path / "runs.jsonl"
    with start_worker("-Q", "default", "-c", "1") as w:
        w.wait_consuming()
        broker.publish_job("test.permanent", {"log": str(log)})
        wait_for(lambda: "job failed permanently" in w.output(), 20)
        wait_for(lambda: _all_empty(broker), 10)
    assert len(test_tasks.runs(log)) == 1


def test_garbage_missing_job_id_and_unknown_task_are_dead_lettered_and_worker_goes_on(
        broker: Broker, start_worker, tmp_path: Path):
    log = tmp_path / "runs.jsonl"
    task = {messages.TASK_HEADER: "test.record"}
    with start_worker("-Q", "default", "-c", "1") as w:
        w.wait_consuming()
        broker.publish_raw(b"\x00\xffnot json", task)
        broker.publish_raw(json.dumps({"args": {}}).encode(), task)
        broker.publish_raw(json.dumps({"job_id": "j1", "args": {}}).encode(), {messages.TASK_HEADER: "no.such"})
        broker.publish_job("test.record", {"log": str(log)})
        wait_for(lambda: len(test_tasks.runs(log)) == 1, 20, what="next job runs")
        wait_for(lambda: broker.depth("failed_tasks") == 3, 10)
        assert w.proc.poll() is None
    reasons = sorted(m.headers["x-importd-reason"] for m in broker.get_all("failed_tasks"))
    assert reasons == ["bad-job-id", "not-json", "unknown-task"]


def test_long_job_with_short_heartbeat_runs_once_and_is_acked_once(broker: Broker, start_worker, tmp_path: Path):
    log = tmp_path / "runs.jsonl"
    with start_worker("-Q", "default", "-c", "1", IMPORTD_HEARTBEAT_S="2") as w:
        w.wait_consuming()
        broker.publish_job("test.sleep", {"log": str(log), "seconds": 20})
        wait_for(lambda: any(r["event"] == "done" for r in test_tasks.runs(log)), 40)
        wait_for(lambda: _all_empty(broker), 10)
        out = w.output()
    assert [r["event"] for r in test_tasks.runs(log)] == ["run", "done"]
    assert out.count("job succeeded") == 1
    assert "connection lost" not in out


def _unacked(broker: Broker, queue: str) -> int:
    vhost = broker.conn.virtual_host
    for line in rabbitmqctl("list_queues", "-p", vhost, "name", "messages_unacknowledged").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == queue and parts[1].isdigit():
            return int(parts[1])
    raise AssertionError(f"queue {queue} not listed")


@pytest.mark.parametrize("task", ["test.raise_after_success", "test.raise_after_failure"])
def test_soft_limit_raise_landing_outside_the_handler_yields_exactly_one_outcome(
        broker: Broker, start_worker, tmp_path: Path, task: str):
    """Issue 12 item 5: the asynchronous SoftTimeLimitExceeded lands as a handler returns, or
    as the on_retry hook returns inside the failure path. Exactly one outcome is handed back
    (a retry: attempt 2 runs once and succeeds), the delivery is not left unacked until the
    hard limit (600 s here), nothing reaches failed_tasks, and the child lives on."""
    log = tmp_path / "runs.jsonl"
    with start_worker("-Q", "default", "-c", "1", IMPORTD_TASK_MODULES=limit_tasks.MODULES) as w:
        w.wait_consuming()
        pids = w.child_pids()
        broker.publish_job(task, {"log": str(log)})
        wait_for(lambda: [r["attempt"] for r in test_tasks.runs(log) if r["event"] == "run"] == [1, 2], 60,
                 what="attempt 1, then one retry")
        wait_for(lambda: _all_empty(broker) and _unacked(broker, "default") == 0, 30,
                 what="every queue empty, nothing unacked")
        assert w.child_pids() == pids
    assert [r["attempt"] for r in test_tasks.runs(log) if r["event"] == "run"] == [1, 2]
    assert broker.depth("failed_tasks") == 0


def test_a_task_rate_limit_is_kept_in_redis_and_importd_rate_limit_none_lifts_it(
        broker: Broker, settings: Settings, start_worker, tmp_path: Path):
    """IMPORTD_RATE_LIMIT is applied by the consumer where it reads the task table (the table
    itself is never rewritten): with the task's own 1/m, a run takes the shared bucket's token
    in Redis; with ``none``, three runs within the minute all go at once and no bucket exists."""
    bucket = keys.rate_limit(settings.redis_prefix, "test.limited")
    client = redis.Redis.from_url(settings.redis_url)
    try:
        log = tmp_path / "limited.jsonl"
        with start_worker("-Q", "default", "-c", "1") as w:
            w.wait_consuming()
            broker.publish_job("test.limited", {"log": str(log)})
            wait_for(lambda: len(test_tasks.runs(log)) == 1, 20, what="the first run")
        assert client.exists(bucket)
        client.delete(bucket)

        lifted = tmp_path / "lifted.jsonl"
        with start_worker("-Q", "default", "-c", "1", IMPORTD_RATE_LIMIT="none") as w:
            w.wait_consuming()
            for _ in range(3):
                broker.publish_job("test.limited", {"log": str(lifted)})
            wait_for(lambda: len(test_tasks.runs(lifted)) == 3, 30, what="three runs within the minute")
            wait_for(lambda: _all_empty(broker), 10, what="all queues empty")
        assert [r["attempt"] for r in test_tasks.runs(lifted)] == [1, 1, 1]
        assert not client.exists(bucket)
    finally:
        client.close()


def test_a_job_that_ignores_the_soft_limit_is_stopped_by_the_asynchronous_raise_with_one_outcome(
        broker: Broker, start_worker, tmp_path: Path):
    """Issue 12 item 5, the raise itself end to end: a handler that never checks the stop
    request gets SoftTimeLimitExceeded ASYNC_RAISE_AFTER_S past its soft limit; that is one
    outcome (max_retries 0: dead-lettered as soft-time-limit), long before the hard limit
    (600 s), with nothing left unacked and the child alive. The job thread arms the raise
    itself, inside the code that turns it into an outcome."""
    log = tmp_path / "runs.jsonl"
    with start_worker("-Q", "default", "-c", "1", IMPORTD_TASK_MODULES=limit_tasks.MODULES) as w:
        w.wait_consuming()
        pids = w.child_pids()
        broker.publish_job("test.busy_past_soft_limit", {"log": str(log)})
        wait_for(lambda: broker.depth("failed_tasks") == 1, 60, what="the job dead-lettered by the raise")
        wait_for(lambda: _all_empty(broker, but="failed_tasks") and _unacked(broker, "default") == 0, 30,
                 what="nothing unacked")
        assert w.child_pids() == pids
    (dead,) = broker.get_all("failed_tasks")
    assert dead.headers["x-importd-reason"] == "soft-time-limit"
    assert [r["attempt"] for r in test_tasks.runs(log)] == [1]
