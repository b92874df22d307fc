"""Job events reach the ``importd.events`` topic exchange and ``importd events`` shows them."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

from importd.config import Settings
from tests.support import infra, ops_tasks, tasks  # noqa: F401 - register the test task types
from tests.support.cli import OPS_TASK_MODULES, popen_cli, run_cli
from tests.support.infra import Broker, wait_for


class Tail:
    """``importd events --json`` in the background, its lines collected by a thread."""

    def __init__(self, settings: Settings, *args: str) -> None:
        self.proc = popen_cli(settings, "events", "--json", *args)
        self.events: list[dict[str, object]] = []
        self.stderr: list[str] = []
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        wait_for(lambda: any("listening on importd.events" in line for line in self.stderr), 20,
                 what="events tail bound")

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def types(self, job_id: str) -> list[object]:
        return [e["type"] for e in self.events if e.get("job_id") == job_id]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def test_a_jobs_life_is_published_as_events_in_order(settings: Settings, broker: Broker, start_worker,
                                                     tmp_path: Path):
    tail = Tail(settings)
    failed_tail = Tail(settings, "-k", "job.dead-lettered.#", "-k", "job.failed.#")
    try:
        with start_worker("-Q", "default", "-c", "1", IMPORTD_TASK_MODULES=OPS_TASK_MODULES) as w:
            w.wait_consuming()
            flaky = broker.publish_job("test.flaky", {"log": str(tmp_path / "flaky.jsonl"), "fail_times": 1})
            dead = broker.publish_job("ops.fail_times", {"dir": str(tmp_path), "fail_times": 1})
            bad = broker.publish_job("test.permanent", {"log": str(tmp_path / "perm.jsonl")})
            try:
                wait_for(lambda: "succeeded" in tail.types(flaky), 30, what="flaky job succeeded event")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nevents: {tail.events}\nworker: {w.output()}\n"
                                     f"depths: {broker.depths()}") from None
            wait_for(lambda: "dead-lettered" in tail.types(dead) and "failed" in tail.types(bad), 10)
    finally:
        tail.stop()
        failed_tail.stop()
    assert tail.types(flaky) == ["received", "started", "retried", "received", "started", "succeeded"]
    assert tail.types(dead) == ["received", "started", "dead-lettered"]
    assert tail.types(bad) == ["received", "started", "failed"]
    by_type = {e["type"]: e for e in tail.events if e.get("job_id") == flaky}
    assert by_type["retried"]["error"] == "TransientError: simulated deadlock"
    assert by_type["succeeded"]["attempt"] == 2 and float(by_type["succeeded"]["duration_s"]) >= 0  # type: ignore[arg-type]
    assert by_type["started"]["worker"] == f"importd@{by_type['started']['hostname']}/{w.proc.pid}"
    dead_letter = next(e for e in tail.events if e["type"] == "dead-lettered")
    assert dead_letter["reason"] == "max-retries" and dead_letter["queue"] == "default"
    # A pattern-bound tail sees only what its keys select.
    assert sorted(str(e["type"]) for e in failed_tail.events) == ["dead-lettered", "failed"]


def test_events_prints_readable_lines_and_stops_after_count(settings: Settings, broker: Broker, start_worker,
                                                           tmp_path: Path):
    with start_worker("-Q", "default", "-c", "1") as w:
        w.wait_consuming()
        proc = popen_cli(settings, "events", "--count", "3", "--timeout", "30")
        assert proc.stderr is not None
        assert "listening" in proc.stderr.readline()
        job_id = broker.publish_job("test.record", {"log": str(tmp_path / "runs.jsonl")})
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    lines = out.splitlines()
    assert [line.split()[1] for line in lines] == ["received", "started", "succeeded"]
    assert all(f" {job_id} task=test.record attempt=1 queue=default" in line for line in lines)
    assert run_cli(settings, "events", "--timeout", "0.5").returncode == 0


def test_events_tail_reconnects_after_the_broker_drops_its_connection(
        settings: Settings, broker: Broker, start_worker, tmp_path: Path):
    tail = Tail(settings)
    try:
        vhost = settings.broker_url.rsplit("/", 1)[1]
        ours = broker.channel().connection.sock.getsockname()[1]  # the test's own connection stays
        for line in infra.rabbitmqctl("list_connections", "pid", "vhost", "peer_port").splitlines():
            pid, where, port = line.split("\t")
            if where.strip() == vhost and int(port) != ours:
                infra.rabbitmqctl("close_connection", pid.strip(), "test: dropped on purpose", check=False)
        wait_for(lambda: any("reconnecting" in line for line in tail.stderr), 20, what="tail noticed")
        wait_for(lambda: sum("listening on" in line for line in tail.stderr) == 2 and tail.proc.poll() is None, 30,
                 what="tail subscribed again")
        with start_worker("-Q", "default", "-c", "1") as w:
            w.wait_consuming()
            job_id = broker.publish_job("test.record", {"log": str(tmp_path / "runs.jsonl")})
            wait_for(lambda: "succeeded" in tail.types(job_id), 30, what="events after the reconnect")
    finally:
        tail.stop()
