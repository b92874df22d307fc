"""Real services for tests, each run isolated: its own vhost, database and Redis prefix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from kombu import Connection, Producer

from importd.config import Settings
from importd.worker import messages, topology
from importd.worker.publisher import broker_connection, route_for, send
from tests.support.services import CURRENT as SERVICES

ROOT = Path(__file__).resolve().parents[2]

BASE_DB_URL = os.environ.get("IMPORTD_TEST_ADMIN_DB", SERVICES.database_url("postgres"))


def rabbitmqctl(*args: str, check: bool = True) -> str:
    out = subprocess.run([*SERVICES.rabbitmqctl, "-q", *args], capture_output=True, text=True, timeout=120)
    if check and out.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {out.stderr or out.stdout}")
    return out.stdout


def create_vhost(name: str) -> None:
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")


def delete_vhost(name: str) -> None:
    rabbitmqctl("delete_vhost", name, check=False)


def create_database(name: str) -> None:
    with psycopg.connect(BASE_DB_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    with psycopg.connect(BASE_DB_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_id() -> str:
    return f"t{os.getpid()}x{uuid.uuid4().hex[:6]}"


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a subprocess (worker, CLI) that uses the same isolated services."""
    env = dict(os.environ)
    env.update({
        "IMPORTD_BROKER_URL": settings.broker_url,
        "IMPORTD_DATABASE_URL": settings.database_url,
        "IMPORTD_REDIS_URL": settings.redis_url,
        "IMPORTD_REDIS_PREFIX": settings.redis_prefix,
        "IMPORTD_UPLOAD_DIR": str(settings.upload_dir),
        "IMPORTD_TABLES": settings.tables,
        "IMPORTD_TASK_MODULES": settings.task_modules,
        "IMPORTD_RATE_LIMIT": settings.rate_limit,
        "IMPORTD_LOG_LEVEL": "info",
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


class Broker:
    """Small admin helpers over one vhost, on a real connection."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conn: Connection = broker_connection(settings, heartbeat=0)

    def channel(self) -> Any:
        try:
            return self.conn.default_channel
        except Exception:  # noqa: BLE001 - reconnect after a broker restart
            self.conn = broker_connection(self.settings, heartbeat=0)
            return self.conn.default_channel

    def reconnect(self) -> None:
        """A fresh connection, after a test restarted the broker."""
        try:
            self.conn.release()
        except Exception:  # noqa: BLE001 - the old connection is dead
            pass
        self.conn = broker_connection(self.settings, heartbeat=0)

    def depth(self, queue: str) -> int:
        return int(self.channel().queue_declare(queue, passive=True).message_count)

    def depths(self) -> dict[str, int]:
        return {name: self.depth(name) for name in topology.all_queue_names()}

    def purge_all(self) -> None:
        for name in topology.all_queue_names():
            self.channel().queue_purge(name)

    def get_all(self, queue: str) -> list[Any]:
        """Take every message from ``queue`` (acked: the queue is emptied)."""
        out = []
        while True:
            msg = self.channel().basic_get(queue, no_ack=True)
            if msg is None:
                return out
            out.append(msg)

    def publish_job(self, task: str, args: dict[str, Any], job_id: str | None = None,
                    priority: int = 0) -> str:
        job = messages.Job(job_id=job_id or uuid.uuid4().hex, task=task, args=args, priority=priority)
        exchange, key = route_for(task)
        send(Producer(self.channel()), job.body(), exchange=exchange, routing_key=key,
             headers=job.headers(), message_id=job.job_id, priority=priority)
        return job.job_id

    def publish_raw(self, body: bytes, headers: dict[str, Any], queue: str = "default",
                    content_type: str = "application/json", priority: int = 0) -> None:
        spec = topology.queue_spec(queue)
        Producer(self.channel()).publish(body, exchange=spec.exchange, routing_key=spec.routing_key,
                                         headers=headers, content_type=content_type, priority=priority,
                                         content_encoding="binary", delivery_mode=2, serializer=None)

    def close(self) -> None:
        self.conn.release()


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> Any:
    """Poll ``cond`` until it is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except Exception as exc:  # noqa: BLE001 - services may be restarting
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or cond}: last={last!r}")


class WorkerProcess:
    """``python -m importd worker`` as a real subprocess, its output kept in a file."""

    def __init__(self, settings: Settings, log_path: Path, args: list[str], env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "importd", "worker", *args], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     start_new_session=True)  # its own process group: see stop()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_consuming(self, count: int = 1, timeout: float = 30.0) -> None:
        wait_for(lambda: self.output().count('"consuming"') >= count or self.proc.poll() is not None,
                 timeout, what="worker consuming")
        assert self.proc.poll() is None, self.output()

    def child_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        try:  # children included, even those a killed supervisor left to another parent
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()
        return self.proc.returncode


@contextmanager
def worker(settings: Settings, tmp: Path, *args: str, **env_extra: str) -> Iterator[WorkerProcess]:
    w = WorkerProcess(settings, tmp / f"worker-{uuid.uuid4().hex[:6]}.log", list(args),
                      env_for(settings, **env_extra))
    try:
        yield w
    finally:
        w.stop()
