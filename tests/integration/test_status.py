"""``importd status`` reads queue depths and consumers from the real broker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from importd.config import Settings
from importd.imports import store
from importd.worker import topology
from tests.support.cli import run_cli
from tests.support.infra import SERVICES, Broker


@pytest.fixture
def a_job(migrated: Settings) -> Iterator[str]:
    """A job of this test's own, so the job counts compared are not all zero whatever else the
    run's database holds (a status that printed zeros would then show); deleted after."""
    with store.connect(migrated) as conn:
        job_id = store.create_job(conn, store.JobRecord(id=uuid.uuid4().hex, state="CANCELLED")).id
    yield job_id
    with store.connect(migrated) as conn:
        conn.execute("DELETE FROM importd.jobs WHERE id = %s", (job_id,))


def test_status_shows_every_queue_with_depth_and_consumers(migrated: Settings, broker: Broker, start_worker,
                                                          a_job: str):
    settings = migrated  # the job store exists: status reads job counts, not an error
    with store.connect(settings) as conn:
        jobs = dict(store.counts_by_state(conn))
    assert jobs["CANCELLED"] >= 1
    for _ in range(3):
        broker.publish_raw(b"{}", {}, queue="bulk_ops_queue")
    with start_worker("-Q", "default", "-c", "2") as w:
        w.wait_consuming(2)
        out = run_cli(settings, "status", "--json")
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert set(doc["queues"]) == set(topology.all_queue_names())
        assert doc["queues"]["default"] == {"messages": 0, "consumers": 2, "error": ""}
        assert doc["queues"]["bulk_ops_queue"]["messages"] == 3
        assert doc["queues"]["failed_tasks"]["messages"] == 0
        assert doc["queues"]["import_queue.retry.1"]["consumers"] == 0
        assert doc["jobs_error"] is None and doc["jobs"] == jobs

        text = run_cli(settings, "status").stdout
        lines = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
        assert lines["default"][:2] == ["0", "2"] and lines["bulk_ops_queue"][:2] == ["3", "0"]
        assert "jobs:" in text


def test_status_on_an_unreachable_broker_exits_1_with_a_message(settings: Settings):
    out = run_cli(settings, "status", IMPORTD_BROKER_URL=SERVICES.broker_url(f"no-{uuid.uuid4().hex}"))
    assert out.returncode == 1
    assert "broker not readable" in out.stderr
