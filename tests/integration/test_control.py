"""``importd ping`` and ``importd inspect active`` against real worker processes."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

from importd.config import Settings
from tests.support import infra
from tests.support import tasks as test_tasks
from tests.support.cli import run_cli
from tests.support.infra import Broker, wait_for


def test_ping_gets_one_pong_per_running_worker_and_exit_1_when_none(
        settings: Settings, broker: Broker, start_worker):
    with start_worker("-Q", "default", "-c", "1") as a, start_worker("-Q", "default", "-c", "2") as b:
        a.wait_consuming()
        b.wait_consuming(2)
        out = run_cli(settings, "ping", "--timeout", "1")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        host = socket.gethostname()
        assert sorted(lines) == sorted(f"-> importd@{host}/{w.proc.pid}: OK pong" for w in (a, b))
        doc = json.loads(run_cli(settings, "ping", "--json").stdout)
        assert sorted(doc[f"importd@{host}/{b.proc.pid}"]["children"]) == sorted(b.child_pids())
    out = run_cli(settings, "ping", "--timeout", "0.5")
    assert out.returncode == 1
    assert out.stdout == "" and "no worker answered" in out.stderr


def test_inspect_active_shows_the_running_job_while_it_runs(
        settings: Settings, broker: Broker, start_worker, tmp_path: Path):
    log = tmp_path / "runs.jsonl"
    with start_worker("-Q", "default", "-c", "1") as w:
        w.wait_consuming()
        out = run_cli(settings, "inspect", "active")
        assert out.returncode == 0 and out.stdout.strip().endswith(": empty"), out
        go = tmp_path / "go"  # the job runs until the test has looked at it
        job_id = broker.publish_job("test.sleep", {"log": str(log), "seconds": 120, "until": str(go)})
        wait_for(lambda: test_tasks.runs(log), 20, what="job started")
        # The job thread sleeps without yielding; the connection's owner still answers.
        out = run_cli(settings, "inspect", "active")
        assert out.returncode == 0, out.stderr
        assert f"-> importd@{socket.gethostname()}/{w.proc.pid}: 1 active" in out.stdout
        match = re.search(rf"\* {job_id} task=test.sleep queue=default attempt=1 elapsed=([\d.]+)s", out.stdout)
        assert match, out.stdout
        assert 0 <= float(match.group(1)) < 120
        assert run_cli(settings, "ping").returncode == 0
        doc = json.loads(run_cli(settings, "inspect", "active", "--json").stdout)
        go.touch()
        (jobs,) = doc.values()
        assert [j["job_id"] for j in jobs] == [job_id]
        wait_for(lambda: [r for r in test_tasks.runs(log) if r.get("event") == "done"], 30, what="job done")


def test_a_worker_answers_ping_again_after_its_connection_was_dropped(
        settings: Settings, broker: Broker, start_worker):
    with start_worker("-Q", "default", "-c", "1") as w:
        w.wait_consuming()
        vhost = settings.broker_url.rsplit("/", 1)[1]
        ours = broker.channel().connection.sock.getsockname()[1]
        for line in infra.rabbitmqctl("list_connections", "pid", "vhost", "peer_port").splitlines():
            pid, where, port = line.split("\t")
            if where.strip() == vhost and int(port) != ours:
                infra.rabbitmqctl("close_connection", pid.strip(), "test: dropped on purpose", check=False)
        w.wait_consuming(2)  # the child reconnected and ran its extensions again
        out = run_cli(settings, "ping")
        assert out.returncode == 0 and out.stdout.count("OK pong") == 1, out
