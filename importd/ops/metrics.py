"""Prometheus metrics: ``/metrics`` on the API, and on a worker port with ``--metrics-port``.

Two sources, read where they live:

- State, read at scrape time (API and worker): queue depths and consumers by passive
  ``queue_declare`` (the DLQ included), and from PostgreSQL when the store is installed: jobs
  by state, rows imported and rejected, and the import duration histogram of finished jobs.
- Worker activity, counted as it happens: jobs received and finished by outcome, and job
  durations. The worker is prefork, so children count in prometheus_client's multiprocess
  mode (one mmap file per child in a private directory) and the supervisor serves the sum;
  only counters and histograms are used, which stay right when children die.

Mount on the API: ``Route("/metrics", metrics.asgi_app(settings))`` (or :func:`route`).
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from kombu import Connection
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from importd import logs
from importd.config import Settings
from importd.imports.states import ALL
from importd.worker import topology
from importd.worker.publisher import broker_connection

if TYPE_CHECKING:
    from importd.worker.consumer import Consumer

#: Histogram buckets in seconds, for job and import durations (up to the 3600 s hard limit).
DURATION_BUCKETS_S = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3300, 3600)
#: Job states always reported (0 when none), so dashboards see every series.
JOB_STATES = tuple(str(state) for state in ALL)
#: Key of a child's counters in ``Consumer.resources``.
RESOURCE_KEY = "importd.ops.metrics"
#: Environment variable prometheus_client reads for its multiprocess directory.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

log = logs.get("importd.ops.metrics")


class BrokerCollector(Collector):
    """Depth and consumers of every importd queue, read at scrape time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("importd_queue_messages", "Messages ready in the queue", labels=["queue"])
        consumers = GaugeMetricFamily("importd_queue_consumers", "Consumers of the queue", labels=["queue"])
        dlq = GaugeMetricFamily("importd_dlq_messages", f"Messages in the dead-letter queue {topology.DLQ}")
        up = GaugeMetricFamily("importd_broker_up", "1 if the broker answered this scrape")
        try:
            with broker_connection(self.settings, heartbeat=0) as conn:
                for queue in topology.queue_stats(conn):
                    if queue.messages is None or queue.consumers is None:  # not declared yet
                        continue
                    depth.add_metric([queue.name], queue.messages)
                    consumers.add_metric([queue.name], queue.consumers)
                    if queue.name == topology.DLQ:
                        dlq.add_metric([], queue.messages)
            up.add_metric([], 1)
        except Exception as exc:  # noqa: BLE001 - a scrape reports the broker down, never fails
            log.warning("metrics: broker not readable", error=str(exc))
            up.add_metric([], 0)
        yield from (depth, consumers, dlq, up)


_DURATIONS_SQL = """
SELECT {buckets}, count(*), coalesce(sum(d), 0)
FROM (SELECT extract(epoch FROM finished_at - started_at)::float8 AS d FROM importd.jobs
      WHERE state IN ('SUCCESS', 'FAILURE') AND started_at IS NOT NULL AND finished_at IS NOT NULL) AS t
"""
_ROWS_SQL = "SELECT coalesce(sum(rows_imported), 0), coalesce(sum(rows_rejected), 0) FROM importd.jobs"


class StoreCollector(Collector):
    """Jobs by state, rows and import durations from PostgreSQL (if importd.imports.store exists)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        try:
            store: Any = importlib.import_module("importd.imports.store")
        except ImportError:
            return
        up = GaugeMetricFamily("importd_database_up", "1 if PostgreSQL answered this scrape")
        try:
            with store.connect(self.settings) as conn:
                states = dict(store.counts_by_state(conn))
                imported, rejected = conn.execute(_ROWS_SQL).fetchone()
                buckets = ", ".join("count(*) FILTER (WHERE d <= %s)" for _ in DURATION_BUCKETS_S)
                row = conn.execute(_DURATIONS_SQL.format(buckets=buckets), DURATION_BUCKETS_S).fetchone()
        except Exception as exc:  # noqa: BLE001 - the database being down is a metric, not an error
            log.warning("metrics: database not readable", error=str(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        jobs = GaugeMetricFamily("importd_jobs", "Jobs by state", labels=["state"])
        for state in sorted(set(JOB_STATES) | set(states)):
            jobs.add_metric([state], states.get(state, 0))
        rows = CounterMetricFamily("importd_rows_imported", "Rows imported by all jobs")
        rows.add_metric([], int(imported))
        bad = CounterMetricFamily("importd_rows_rejected", "Rows rejected by all jobs")
        bad.add_metric([], int(rejected))
        counts, total, total_s = list(row[:-2]), int(row[-2]), float(row[-1])
        hist = HistogramMetricFamily("importd_import_duration_seconds", "Duration of finished imports")
        hist.add_metric([], [(str(float(b)), int(c)) for b, c in zip(DURATION_BUCKETS_S, counts, strict=True)]
                        + [("+Inf", total)], total_s)
        yield from (up, jobs, rows, bad, hist)


def registry(settings: Settings, *, worker: bool = False) -> CollectorRegistry:
    """The registry ``/metrics`` serves: broker and store state, plus worker counters if asked."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(BrokerCollector(settings))
    reg.register(StoreCollector(settings))
    if worker and os.environ.get(MULTIPROC_ENV):
        MultiProcessCollector(reg)
    return reg


# -- API ---------------------------------------------------------------------------------


class MetricsApp:
    """ASGI app answering any GET with the Prometheus text format (scraped off the event loop)."""

    def __init__(self, settings: Settings) -> None:
        self.registry = registry(settings)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = await asyncio.to_thread(generate_latest, self.registry)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())]})
        await send({"type": "http.response.body", "body": body})


def asgi_app(settings: Settings) -> MetricsApp:
    """``/metrics`` for the API: ``Route("/metrics", metrics.asgi_app(settings))``."""
    return MetricsApp(settings)


def route(settings: Settings, path: str = "/metrics") -> Any:
    """A Starlette route serving :func:`asgi_app` at ``path``."""
    from starlette.routing import Route

    return Route(path, asgi_app(settings), methods=["GET"])


# -- worker ------------------------------------------------------------------------------

class WorkerMetrics:
    """Counters a worker child updates from its job events (owner thread, via the bus)."""

    def __init__(self) -> None:
        self.received = Counter("importd_jobs_received", "Deliveries decoded and accepted",
                                ["task", "queue"], registry=None)
        self.finished = Counter("importd_jobs_finished", "Job attempts by outcome (succeeded, failed, "
                                "retried, deferred, dead-lettered)", ["task", "queue", "outcome"], registry=None)
        self.duration = Histogram("importd_job_duration_seconds", "Run time of a job attempt",
                                  ["task", "outcome"], buckets=DURATION_BUCKETS_S, registry=None)

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        task, queue = str(fields.get("task") or "unknown"), str(fields.get("queue") or "")
        if event == "received":
            self.received.labels(task, queue).inc()
        elif event in ("succeeded", "failed", "retried", "deferred", "dead-lettered"):
            self.finished.labels(task, queue, event).inc()
            if fields.get("duration_s"):
                self.duration.labels(task, event).observe(float(fields["duration_s"]))


def serve_worker(settings: Settings, port: int, addr: str = "") -> None:
    """In the supervisor, before forking: ``/metrics`` served on ``port`` from the children's
    files. Multiprocess mode must be on already: ``PROMETHEUS_MULTIPROC_DIR`` set before
    prometheus_client was first imported (``importd.cli`` does it), which the library reads
    then; no attribute of the library is patched."""
    if not os.environ.get(MULTIPROC_ENV) or values.ValueClass is values.MutexValue:
        raise RuntimeError(f"{MULTIPROC_ENV} must be set before prometheus_client is imported")
    server, _ = _start_http_server(port, addr, registry(settings, worker=True))
    # The listening socket belongs to the supervisor: each forked child closes its copy.
    os.register_at_fork(after_in_child=server.socket.close)
    log.info("metrics served", port=port, multiproc_dir=os.environ[MULTIPROC_ENV])


def _start_http_server(port: int, addr: str, reg: CollectorRegistry) -> tuple[Any, Any]:
    from prometheus_client import start_http_server

    return start_http_server(port, addr=addr or "0.0.0.0", registry=reg)


def attach(consumer: Consumer, connection: Connection) -> None:
    """Consumer extension: count the child's job events (only when the worker serves metrics)."""
    if not os.environ.get(MULTIPROC_ENV):
        return
    # One set of counters per child process, kept in the consumer's per-process resources
    # (attach runs again after every reconnect).
    counters = consumer.resources.get(RESOURCE_KEY)
    if counters is None:
        counters = consumer.resources[RESOURCE_KEY] = WorkerMetrics()
    if counters not in consumer.events.listeners:
        consumer.events.listeners.append(counters)
