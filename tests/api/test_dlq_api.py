"""``GET /api/dlq`` and ``POST /api/dlq/replay``: the page's view of failed_tasks, through the
same code as ``importd replay-dlq``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import ops_tasks  # noqa: F401 - registers ops.fail_times
from tests.support.infra import Broker, wait_for

pytestmark = pytest.mark.anyio


def _dead_letters(broker: Broker, count: int) -> list[str]:
    """Jobs a consumer rejected without requeue: RabbitMQ dead-letters them to failed_tasks."""
    ids = [broker.publish_job("ops.fail_times", {"dir": "/nonexistent", "fail_times": 0}) for _ in range(count)]
    channel = broker.channel()
    for _ in range(count):
        msg = channel.basic_get("default", no_ack=False)
        channel.basic_reject(msg.delivery_tag, requeue=False)
    wait_for(lambda: broker.depth("failed_tasks") == count, 20, what="dead letters")
    return ids


async def test_the_dlq_is_listed_with_reasons_and_a_selection_is_replayed_leaving_the_rest(
        api_client: Any, broker: Broker) -> None:
    ids = _dead_letters(broker, 3)
    async with api_client() as client:
        listed = (await client.get("/api/dlq")).json()["dead_letters"]
        replayed = await client.post("/api/dlq/replay", json={"job_ids": ids[:2]})
        bad = await client.post("/api/dlq/replay", json={"job_ids": []})
    assert sorted(d["job_id"] for d in listed) == sorted(ids)
    assert all(d["reason"] for d in listed)
    assert replayed.status_code == 200
    assert sorted(d["job_id"] for d in replayed.json()["replayed"]) == sorted(ids[:2])
    assert all(d["outcome"] == "moved" for d in replayed.json()["replayed"])
    assert broker.depth("failed_tasks") == 1 and broker.depth("default") == 2
    assert bad.status_code == 400
