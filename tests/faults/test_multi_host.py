"""Many hosts: an API host and two worker hosts that share nothing but the services.

Each "host" is a process group of its own with a private directory (its upload dir, its logs)
that no other host reads: the API streams uploads into the S3 store, the workers read objects
from it. What they share is the S3 server (``rclone serve s3`` over a directory, so that it can
be restarted with its data), a three-node RabbitMQ cluster of this test's own with quorum
queues (base port 5691; ``tests/integration/test_quorum.py`` uses 5681), PostgreSQL and Redis.

30 imports of mixed sizes in both modes go in through the API: raw bodies, multipart forms and
presigned multipart uploads (parts PUT straight to S3). While they run the test restarts the
S3 server, SIGKILLs one whole worker host (its supervisor and every child, as a power cut
would) and stops the RabbitMQ node that leads import_queue; each fault is recorded with the
jobs it met running. Then the fault suite's audit: every job SUCCESS, every row once, nothing
stranded in any queue.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from importd.config import Settings
from importd.worker import topology
from importd.worker.publisher import broker_connection
from tests.faults.conftest import TABLE, Batch, audit, make_file, states
from tests.faults.evidence import REDELIVERY, EventLog, Evidence, Hit, running
from tests.support import infra
from tests.support.cluster import Cluster, running_cluster
from tests.support.infra import Broker, WorkerProcess, wait_for
from tests.support.s3 import DiskS3, aws_env, disk_s3

pytestmark = pytest.mark.slow

#: First AMQP port of this test's cluster (5691-5693; distribution ports +20000).
BASE_PORT = 5691
#: Imports: (rows, mode, how uploaded). Mixed sizes, both modes, three ways in; 30 in all.
SIZES = (2_000, 5_000, 10_000, 20_000, 40_000)
WAYS = ("raw", "multipart", "raw", "multipart", "presigned")
#: One presigned upload larger than a part (8 MiB), so that it has two parts.
BIG_PRESIGNED_ROWS = 190_000
#: Batch size of resumable imports: small, so that they commit checkpoints as they go.
BATCH_BYTES = 256 * 1024
#: Seconds the test keeps trying to land a fault on running work (not an assertion).
INJECT_WINDOW_S = 90


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster(BASE_PORT) as c:
        yield c


@dataclasses.dataclass
class Hosts:
    """The run's shared settings and the private directory of each host."""

    settings: Settings
    s3: DiskS3
    root: Path

    def env(self, host: str, **extra: str) -> dict[str, str]:
        private = self.root / host / "uploads"
        private.mkdir(parents=True, exist_ok=True)
        return infra.env_for(dataclasses.replace(self.settings, upload_dir=private), **aws_env(),
                             IMPORTD_STORAGE_URL=self.s3.server.url("uploads"),
                             IMPORTD_S3_ENDPOINT_URL=self.s3.server.endpoint, IMPORTD_QUEUE_TYPE="quorum",
                             IMPORTD_TABLES=TABLE, IMPORTD_RATE_LIMIT="none",
                             IMPORTD_IMPORT_BATCH_BYTES=str(BATCH_BYTES), **extra)

    def worker(self, host: str) -> WorkerProcess:
        """``importd worker`` as host ``host``: a new process group (see WorkerProcess)."""
        log = self.root / host / f"worker-{uuid.uuid4().hex[:6]}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        return WorkerProcess(self.settings, log, ["-Q", "import_queue,bulk_ops_queue", "-c", "2"], self.env(host))

    def private_files(self, host: str) -> list[Path]:
        return [p for p in (self.root / host / "uploads").rglob("*") if p.is_file()]


class ApiHost:
    """``importd api`` on a free loopback port, in a process group of its own."""

    def __init__(self, hosts: Hosts) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = hosts.root / "api" / "api.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "importd", "api", "--port", str(self.port)],
                                     env=hosts.env("api", IMPORTD_API_TOKENS=""), stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=infra.ROOT, start_new_session=True)
        wait_for(lambda: self.proc.poll() is not None or httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200,
                 60, what="the API answering /healthz")
        assert self.proc.poll() is None, self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def upload(client: httpx.Client, way: str, data: bytes, mode: str) -> str:
    """One import through the API host, the way named; returns the job id."""
    if way == "raw":
        r = client.post(f"/api/upload?table={TABLE}&mode={mode}", content=data, headers={"Content-Type": "text/csv"})
    elif way == "multipart":
        r = client.post("/api/upload", files={"file": ("f.csv", data, "text/csv")}, data={"table": TABLE, "mode": mode})
    else:
        started = client.post("/api/uploads", json={"size": len(data)})
        assert started.status_code == 201, started.text
        body, step = started.json(), started.json()["part_bytes"]
        for part in body["parts"]:  # straight to the S3 server, not through the API
            start = (part["number"] - 1) * step
            put = httpx.put(part["url"], content=data[start:start + step], timeout=60)
            assert put.status_code == 200, put.text
        r = client.post(f"/api/uploads/{body['upload_id']}/complete",
                        json={"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "table": TABLE,
                              "mode": mode})
    assert r.status_code == 202, (way, r.text)
    return str(r.json()["job_id"])


def plan(rng: random.Random) -> list[tuple[int, str, str]]:
    """30 imports: every size with every way of upload, half of them resumable."""
    imports = [(rows, "resumable" if (i + j) % 2 else "atomic", way)
               for i, rows in enumerate(SIZES) for j, way in enumerate(WAYS)]
    imports += [(rows, "atomic" if k % 2 else "resumable", "presigned") for k, rows in enumerate((5_000, 30_000))]
    imports += [(BIG_PRESIGNED_ROWS, "resumable", "presigned"), (1_000, "atomic", "raw"),
                (15_000, "resumable", "multipart")]
    rng.shuffle(imports)
    assert len(imports) == 30
    return imports


def busy_on(settings: Settings, jobs: Batch, worker: WorkerProcess | None = None) -> list[Any]:
    """The jobs running now (on ``worker``'s children only, if given)."""
    rows = running(settings, jobs.jobs)
    if worker is None:
        return rows
    children = set(worker.child_pids())
    return [r for r in rows if r.pid in children]


def inject(found: Any, rng: random.Random) -> Any:
    """Poll ``found`` until it returns running work, within the injection window."""
    deadline = time.monotonic() + INJECT_WINDOW_S
    while time.monotonic() < deadline:
        rows = found()
        if rows:
            return rows
        time.sleep(rng.uniform(0.05, 0.2))
    return []


def test_an_api_host_and_two_worker_hosts_sharing_only_the_services_survive_node_host_and_s3_faults(
        cluster: Cluster, fsettings: Settings, fault_db: psycopg.Connection[Any], tmp_path: Path) -> None:
    rng = random.Random(20261129)
    settings = dataclasses.replace(fsettings, broker_url=cluster.url(cluster.vhost()), queue_type="quorum",
                                   upload_dir=tmp_path / "client")
    settings.upload_dir.mkdir()
    vhost = settings.broker_url.split(";")[0].rsplit("/", 1)[1]
    with broker_connection(settings) as conn:
        topology.declare(conn, "quorum")
    with disk_s3(tmp_path / "s3") as s3:
        hosts = Hosts(settings, s3, tmp_path / "hosts")
        broker = Broker(settings)
        events = EventLog(broker, queue_arguments={"x-queue-type": "quorum"})
        api = ApiHost(hosts)
        batch = Batch()
        try:
            with httpx.Client(base_url=api.url, timeout=120) as client:
                for i, (rows, mode, way) in enumerate(plan(rng)):
                    tag = f"h{i}{mode[0]}{way[0]}"
                    data = make_file(settings, tag, rows, seed=i).read_bytes()
                    batch.jobs[upload(client, way, data, mode)] = (tag, rows)
            assert hosts.private_files("api") == []  # the API host kept nothing: it all went to S3
            run_the_faults(cluster, hosts, settings, vhost, broker, events, batch, fault_db, rng)
        finally:
            api.stop()
            events.close()
            broker.close()


def run_the_faults(cluster: Cluster, hosts: Hosts, settings: Settings, vhost: str, broker: Broker,
                   events: EventLog, batch: Batch, fault_db: psycopg.Connection[Any], rng: random.Random) -> None:
    """The three faults, each as soon as it can meet running work (the imports are short: a fault
    that waited for the one before it to heal could find nothing left to hit)."""
    ev = Evidence("many hosts", settings)
    host_a, host_b = hosts.worker("worker-a"), hosts.worker("worker-b")
    try:
        host_a.wait_consuming(2, timeout=60)
        host_b.wait_consuming(2, timeout=60)

        # 1. Restart the S3 server (same port, same data) while workers read objects from it.
        met = inject(lambda: busy_on(settings, batch), rng)
        hosts.s3.restart()
        record(ev, "restart of the S3 server", met, "no job was running")

        # 2. SIGKILL the whole of worker host B (supervisor and children) while it runs imports.
        met = inject(lambda: busy_on(settings, batch, host_b), rng)
        os.killpg(host_b.proc.pid, signal.SIGKILL)
        host_b.stop()
        kill = record(ev, f"SIGKILL of worker host B's process group {host_b.proc.pid}", met, "no job ran on it")

        # 3. Stop the RabbitMQ node leading import_queue while imports run (on host A).
        leader = cluster.leader(vhost, "import_queue")
        other = (leader + 1) % 3
        met = inject(lambda: busy_on(settings, batch), rng)
        consuming = host_a.output().count('"consuming"')
        cluster.ctl("stop_app", node=leader)
        try:
            record(ev, f"stop of RabbitMQ node {cluster.nodes[leader]}, leader of import_queue", met,
                   "no job was running")
            wait_for(lambda: cluster.leader(vhost, "import_queue", asked=other) != leader, 120,
                     what="import_queue electing a new leader")
            wait_for(lambda: host_a.output().count('"consuming"') > consuming, 120,
                     what="worker host A consuming again through another node")
        finally:
            cluster.ctl("start_app", node=leader)
        wait_for(lambda: cluster.running(other) == 3, 120, what="the node back in the cluster")
        host_b = hosts.worker("worker-b")  # the killed host comes back (a fresh process group)
        host_b.wait_consuming(2, timeout=60)

        host_b.stop()  # audit() stops host A, then counts what is left in the queues
        audit(settings, fault_db, broker, batch, worker=host_a, timeout=300)
    finally:
        host_a.stop()
        host_b.stop()
    final = states(settings, list(batch.jobs))
    assert set(final.values()) == {"SUCCESS"}, final
    # A job killed with its host comes back redelivered, and that delivery counts as an attempt.
    if kill is not None and not any(events.of(j.id, "retried", "worker-lost") for j in kill.jobs):
        ev.demote(kill, f"no job of {[j.id for j in kill.jobs]} shows a redelivery")
    assert hosts.private_files("worker-a") == hosts.private_files("worker-b") == []  # read from S3, no copy
    ev.observe(events, batch.jobs)
    ev.record()
    assert len(ev.hits) == 3, ev.missed
    assert ev.paths[REDELIVERY] >= 1, dict(ev.paths)


def record(ev: Evidence, fault: str, met: list[Any], why_missed: str) -> Hit | None:
    """A hit with the jobs read running just before the fault, or a miss."""
    if met:
        return ev.hit(fault, met)
    ev.miss(fault, why_missed)
    return None
