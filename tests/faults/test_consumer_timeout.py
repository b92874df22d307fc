"""The broker's consumer_timeout lowered below a job's duration (and restored after)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import report
from tests.support import tasks as test_tasks
from tests.support.infra import Broker, rabbitmqctl, wait_for


def _get_env(key: str) -> str | None:
    out = rabbitmqctl("eval", f"application:get_env(rabbit, {key}).").strip()
    return out.removeprefix("{ok,").removesuffix("}") if out.startswith("{ok,") else None


def _restore_env(key: str, value: str | None) -> None:
    if value is None:
        rabbitmqctl("eval", f"application:unset_env(rabbit, {key}).")
    else:
        rabbitmqctl("eval", f"application:set_env(rabbit, {key}, {value}).")


@pytest.fixture
def short_consumer_timeout() -> Iterator[int]:
    """consumer_timeout 1 s, checked every 0.2 s (the channel tick, 60 s by default); restored after."""
    before = {key: _get_env(key) for key in ("consumer_timeout", "channel_tick_interval")}
    rabbitmqctl("eval", "application:set_env(rabbit, consumer_timeout, 1000).")
    rabbitmqctl("eval", "application:set_env(rabbit, channel_tick_interval, 200).")
    try:
        yield 1000
    finally:
        for key, value in before.items():
            _restore_env(key, value)


def test_consumer_timeout_closes_the_channel_and_the_worker_recovers(
        short_consumer_timeout, broker: Broker, start_worker, tmp_path):
    """Protection proved: a channel closed by the broker mid-job is treated like a lost
    connection (reconnect, outcome of the dead channel dropped, redelivery counted), so the
    worker neither crashes nor acks on a dead channel; the job is not lost."""
    log = tmp_path / "runs.jsonl"
    with start_worker("-Q", "default", "-c", "1") as w:
        w.wait_consuming()
        broker.publish_job("test.sleep", {"log": str(log), "seconds": 8})
        wait_for(lambda: "broker connection lost" in w.output(), 30, what="consumer_timeout fired")
        wait_for(lambda: [r["event"] for r in test_tasks.runs(log)].count("done") >= 1, 30)
        assert w.proc.poll() is None
    assert "outcome of a lost connection dropped" in w.output()
    report.add(faults_injected=1, jobs_run=1)
