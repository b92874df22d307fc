"""The broker's consumer_timeout lowered below a job's duration (and restored after)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.conftest import stranded_after_stop
from tests.faults.evidence import REDELIVERY, EventLog, Evidence
from tests.support import report
from tests.support import tasks as test_tasks
from tests.support.infra import SERVICES, Broker, rabbitmqctl, wait_for
from tests.support.proxy import Proxy

KEYS = ("consumer_timeout", "channel_tick_interval")


def _get_env(key: str) -> str | None:
    out = rabbitmqctl("eval", f"application:get_env(rabbit, {key}).").strip()
    return out.removeprefix("{ok,").removesuffix("}") if out.startswith("{ok,") else None


def _restore_env(key: str, value: str | None) -> None:
    if value is None:
        rabbitmqctl("eval", f"application:unset_env(rabbit, {key}).")
    else:
        rabbitmqctl("eval", f"application:set_env(rabbit, {key}, {value}).")


@pytest.fixture
def short_consumer_timeout() -> Iterator[dict[str, str | None]]:
    """consumer_timeout 1 s, checked every 0.2 s (the channel tick, 60 s by default); restored
    after. Yields the values to restore (a test may restore them early, channels opened later
    get the broker's own timeout)."""
    before = {key: _get_env(key) for key in KEYS}
    rabbitmqctl("eval", "application:set_env(rabbit, consumer_timeout, 1000).")
    rabbitmqctl("eval", "application:set_env(rabbit, channel_tick_interval, 200).")
    try:
        yield before
    finally:
        for key, value in before.items():
            _restore_env(key, value)


def test_consumer_timeout_closes_the_channel_and_the_worker_recovers(
        short_consumer_timeout, settings, broker: Broker, events: EventLog, start_worker, tmp_path):
    """Protection proved: a channel closed by the broker mid-job is treated like a lost
    connection (reconnect, outcome of the dead channel dropped, redelivery counted), so the
    worker neither crashes nor acks on a dead channel; the job is not lost: once the timeout
    is back to the broker's own, a later attempt runs to the end and no message is left."""
    log = tmp_path / "runs.jsonl"
    ev = Evidence("consumer_timeout (one job)", broker.settings)
    vhost = settings.broker_url.rsplit("/", 1)[1]
    with Proxy(SERVICES.host, SERVICES.amqp_port) as proxy, start_worker(
            "-Q", "default", "-c", "1",
            IMPORTD_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}") as w:
        w.wait_consuming()
        job = broker.publish_job("test.sleep", {"log": str(log), "seconds": 8})
        wait_for(lambda: test_tasks.runs(log), 30, what="attempt 1 running")
        connected = proxy.accepted
        wait_for(lambda: proxy.accepted > connected, 30, what="the worker reconnecting after its channel closed")
        runs = test_tasks.runs(log)
        if [r["event"] for r in runs] == ["run"]:  # attempt 1 still sleeping when its channel was closed
            ev.hit("consumer_timeout", [], "attempt 1 running")
        else:
            ev.miss("consumer_timeout", f"runs when the worker reconnected: {runs}")
        for key, value in short_consumer_timeout.items():
            _restore_env(key, value)
        wait_for(lambda: any(r["event"] == "done" and int(r["attempt"]) >= 2 for r in test_tasks.runs(log)), 120,
                 what="a later attempt ran to the end")
        assert w.proc.poll() is None
        wait_for(lambda: events.of(job, "succeeded"), 30, what="the job acked")
        stranded = stranded_after_stop(broker, w)
    attempts = [int(r["attempt"]) for r in test_tasks.runs(log) if r["event"] == "run"]
    assert attempts == sorted(set(attempts)) and attempts[0] == 1 and len(attempts) >= 2, attempts
    assert broker.depth("failed_tasks") == 0
    ev.observe(events, [job])
    report.add(jobs_run=1, messages_stranded=stranded)
    ev.record()
    ev.require(REDELIVERY)
    assert stranded == 0
