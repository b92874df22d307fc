"""Prometheus metrics: the worker's ``--metrics-port`` and the API's ``/metrics`` app."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from importd import metrics
from importd.config import Settings
from tests.support import infra
from tests.support import tasks as test_tasks
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
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_worker_metrics_port_counts_jobs_across_children(broker: Broker, start_worker, tmp_path: Path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"

    def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        with urllib.request.urlopen(url, timeout=10) as response:
            return _samples(response.read().decode())

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
        assert _value(before, "importd_jobs_finished_total", **key) == 0
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
    if importlib.util.find_spec("importd.store") is not None:  # job figures come from PostgreSQL
        assert ("importd_database_up", frozenset()) in samples


_JOBS_DDL = """
CREATE SCHEMA IF NOT EXISTS importd;
CREATE TABLE IF NOT EXISTS importd.jobs (
    id text PRIMARY KEY, task text NOT NULL, state text NOT NULL, rows_imported bigint NOT NULL DEFAULT 0,
    rows_rejected bigint NOT NULL DEFAULT 0, started_at timestamptz, finished_at timestamptz);
"""


class _TableStore:
    """Stand-in for importd.store where the engine's module is not on this branch: the same
    two calls the metrics use, on a real PostgreSQL table shaped as the shared contract says."""

    def __init__(self, url: str) -> None:
        self.url = url

    def connect(self, settings: Settings) -> psycopg.Connection[Any]:
        return psycopg.connect(settings.database_url, autocommit=True)

    def counts_by_state(self, conn: psycopg.Connection[Any]) -> dict[str, int]:
        return dict(conn.execute("SELECT state, count(*) FROM importd.jobs GROUP BY state").fetchall())


def test_api_metrics_report_jobs_rows_and_durations_from_postgresql(settings: Settings, run_id: str,
                                                                   monkeypatch: pytest.MonkeyPatch):
    name = f"importd_{run_id}_metrics"
    infra.create_database(name)
    try:
        s = dataclasses.replace(settings, database_url=f"postgresql://postgres@127.0.0.1:5432/{name}")
        if importlib.util.find_spec("importd.store") is not None:
            importlib.import_module("importd.store").migrate(s)
        else:
            monkeypatch.setitem(sys.modules, "importd.store", _TableStore(s.database_url))
            with psycopg.connect(s.database_url, autocommit=True) as conn:
                conn.execute(_JOBS_DDL)

        def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
            return _samples(generate_latest(metrics.registry(s)).decode())

        before = scrape()
        assert _value(before, "importd_database_up") == 1
        with psycopg.connect(s.database_url, autocommit=True) as conn:
            conn.execute("INSERT INTO importd.jobs (id, task, state, rows_imported, rows_rejected, started_at, "
                         "finished_at) VALUES ('m1', 'import.csv', 'SUCCESS', 1000, 3, now() - interval '42 s', "
                         "now()), ('m2', 'import.csv', 'PENDING', 0, 0, NULL, NULL)")
        after = scrape()
        assert _value(after, "importd_rows_imported_total") - _value(before, "importd_rows_imported_total") == 1000
        assert _value(after, "importd_rows_rejected_total") - _value(before, "importd_rows_rejected_total") == 3
        assert _value(after, "importd_jobs", state="SUCCESS") == _value(before, "importd_jobs", state="SUCCESS") + 1
        assert _value(after, "importd_jobs", state="PENDING") == _value(before, "importd_jobs", state="PENDING") + 1
        count = "importd_import_duration_seconds_count"
        assert _value(after, count) == _value(before, count) + 1
        assert _value(after, "importd_import_duration_seconds_bucket", le="60.0") == 1
        assert _value(after, "importd_import_duration_seconds_bucket", le="15.0") == 0
    finally:
        infra.drop_database(name)
