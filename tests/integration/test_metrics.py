"""Prometheus metrics: the worker's ``--metrics-port`` and the API's ``/metrics`` app."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from importd.config import Settings
from importd.imports import store
from importd.imports.submit import submit
from importd.ops import metrics
from importd.worker.publisher import Publisher
from tests.support import tasks as test_tasks
from tests.support.importing import TABLES
from tests.support.infra import Broker, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample by (name, labels); parsing fails loudly on malformed exposition text."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sample's value; a series that is not exported fails (it does not read as 0)."""
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no series {name}{labels}"
    return samples[key]


def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return _samples(response.read().decode())


def test_worker_metrics_port_counts_jobs_across_children(broker: Broker, start_worker, tmp_path: Path):
    port = _free_port()

    def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return _scrape(port)

    with start_worker("-Q", "default", "-c", "2", "--metrics-port", str(port)) as w:
        w.wait_consuming(2)
        before = scrape()
        assert _value(before, "importd_queue_consumers", queue="default") == 2
        assert _value(before, "importd_broker_up") == 1
        log = tmp_path / "runs.jsonl"
        for _ in range(3):
            broker.publish_job("test.record", {"log": str(log)})
        broker.publish_job("test.permanent", {"log": str(tmp_path / "perm.jsonl")})
        wait_for(lambda: len(test_tasks.runs(log)) == 3, 20, what="three jobs ran")
        key = {"task": "test.record", "queue": "default", "outcome": "succeeded"}
        wait_for(lambda: _value(scrape(), "importd_jobs_finished_total", **key) == 3, 20, what="counter moved")
        wait_for(lambda: _value(scrape(), "importd_jobs_finished_total", task="test.permanent", queue="default",
                                outcome="failed") == 1, 20, what="failed counted")
        after = scrape()
        # Before any job: the labelled series is not exported yet (a counter child appears at its
        # first increment) or reads 0; after: exactly the three jobs.
        assert before.get(("importd_jobs_finished_total", frozenset(key.items())), 0.0) == 0
        assert _value(after, "importd_jobs_received_total", task="test.record", queue="default") == 3
        assert _value(after, "importd_job_duration_seconds_count", task="test.record", outcome="succeeded") == 3


def test_api_metrics_app_reports_queue_and_dlq_depths(settings: Settings, broker: Broker):
    app = Starlette(routes=[metrics.route(settings)])
    for _ in range(2):
        broker.publish_raw(b"{}", {}, queue="bulk_ops_queue")
    broker.publish_raw(b"{}", {}, queue="default")
    channel = broker.channel()
    channel.basic_reject(channel.basic_get("default", no_ack=False).delivery_tag, requeue=False)
    wait_for(lambda: broker.depth("failed_tasks") == 1, 10)

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            return await client.get("/metrics")

    response = asyncio.run(get())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    assert _value(samples, "importd_queue_messages", queue="bulk_ops_queue") == 2
    assert _value(samples, "importd_queue_messages", queue="import_queue.retry.3") == 0
    assert _value(samples, "importd_dlq_messages") == 1
    assert ("importd_database_up", frozenset()) in samples  # job figures come from PostgreSQL



def test_counters_move_after_a_real_import(isettings: Settings, db: Any, broker: Broker, start_worker):
    """API /metrics (PostgreSQL) and the worker's port (its children) both count the import."""
    port = _free_port()
    api_before = _samples(generate_latest(metrics.registry(isettings)).decode())
    assert _value(api_before, "importd_database_up") == 1
    path = isettings.upload_dir / "people-metrics.csv"
    path.write_bytes(b"id,name,age,note\n" + b"".join(b"%d,name %d,%d,\n" % (i, i, i % 90) for i in range(1, 501))
                     + b"x,bad row,1,\n")
    with start_worker("-Q", "import_queue", "-c", "1", "--metrics-port", str(port), IMPORTD_TABLES=TABLES,
                      IMPORTD_RATE_LIMIT="none") as w:
        w.wait_consuming()
        publisher = Publisher(isettings)
        try:
            rec = submit(isettings, path, "people", max_errors=5, publisher=publisher)
        finally:
            publisher.close()

        def finished() -> bool:
            with store.connect(isettings) as conn:
                job = store.get_job(conn, rec.id)
            return job is not None and job.state == "SUCCESS"

        wait_for(finished, 60, what="import finished")
        key = {"task": "import.csv", "queue": "import_queue", "outcome": "succeeded"}
        wait_for(lambda: _value(_scrape(port), "importd_jobs_finished_total", **key) == 1, 20, what="worker count")
        worker = _scrape(port)
    api = _samples(generate_latest(metrics.registry(isettings)).decode())
    moved = {name: _value(api, name) - _value(api_before, name)
             for name in ("importd_rows_imported_total", "importd_rows_rejected_total",
                          "importd_import_duration_seconds_count")}
    assert moved == {"importd_rows_imported_total": 500, "importd_rows_rejected_total": 1,
                     "importd_import_duration_seconds_count": 1}
    assert _value(api, "importd_jobs", state="SUCCESS") == _value(api_before, "importd_jobs", state="SUCCESS") + 1
    assert _value(worker, "importd_job_duration_seconds_count", task="import.csv", outcome="succeeded") == 1
