"""The prefork supervisor with real children: kills, poison, limits, shutdown, broker restarts."""

from __future__ import annotations

import json
import os
import signal
from datetime import datetime
from pathlib import Path

import pytest

from tests.support import tasks as test_tasks
from tests.support.infra import Broker, rabbitmqctl, wait_for


def _events(log: Path) -> list[str]:
    return [str(r["event"]) for r in test_tasks.runs(log)]


def _sleeping_job(broker: Broker, worker, log: Path, seconds: float) -> None:
    """Start a real worker's only child on a job that sleeps, and wait until it runs."""
    worker.wait_consuming()
    broker.publish_job("test.sleep", {"log": str(log), "seconds": seconds})
    wait_for(lambda: _events(log) == ["run"], 20)


def _others_empty(broker: Broker, but: str = "failed_tasks") -> bool:
    return all(d == 0 for name, d in broker.depths().items() if name != but)


def test_job_whose_process_is_sigkilled_mid_run_runs_again_and_completes(broker: Broker, start_worker, tmp_path):
    log = tmp_path / "runs.jsonl"
    with start_worker("-Q", "default", "-c", "1") as w:
        w.wait_consuming()
        broker.publish_job("test.sleep", {"log": str(log), "seconds": 3})
        wait_for(lambda: _events(log) == ["run"], 20)
        (child,) = w.child_pids()
        os.kill(child, signal.SIGKILL)
        wait_for(lambda: "done" in _events(log), 40, what="second run completes")
        wait_for(lambda: _others_empty(broker, but=""), 10)
    assert _events(log) == ["run", "run", "done"]
    assert [r["attempt"] for r in test_tasks.runs(log)] == [1, 2, 2]
    assert broker.depth("failed_tasks") == 0


def test_poison_message_that_kills_its_worker_every_time_goes_to_dlq_after_max_retries(
        broker: Broker, start_worker, tmp_path):
    log = tmp_path / "runs.jsonl"
    with start_worker("-Q", "default", "-c", "1") as w:
        w.wait_consuming()
        job_id = broker.publish_job("test.kill", {"log": str(log), "after": 0})
        wait_for(lambda: broker.depth("failed_tasks") == 1, 90, what="poison message dead-lettered")
        wait_for(lambda: w.output().count('"consuming"') >= 5, 20, what="worker still consuming")
    assert len(test_tasks.runs(log)) == 4  # the first delivery and three retries, each killed
    assert _others_empty(broker)
    (dead,) = broker.get_all("failed_tasks")
    assert dead.properties["message_id"] == job_id
    assert dead.headers["x-importd-reason"] == "worker-lost"
    assert dead.headers["x-importd-attempts"] == 4


def test_sigterm_during_a_job_lets_it_finish_acks_and_exits_zero(broker: Broker, start_worker, tmp_path):
    log = tmp_path / "runs.jsonl"
    with start_worker("-Q", "default", "-c", "1") as w:
        _sleeping_job(broker, w, log, 3)
        w.proc.send_signal(signal.SIGTERM)
        assert w.proc.wait(30) == 0
    assert _events(log) == ["run", "done"]
    assert _others_empty(broker, but="")


def test_second_sigterm_exits_at_once_and_the_job_is_redelivered(broker: Broker, start_worker, tmp_path):
    log = tmp_path / "runs.jsonl"
    with start_worker("-Q", "default", "-c", "1") as w:
        _sleeping_job(broker, w, log, 30)
        w.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "shutting down" in w.output(), 10)
        w.proc.send_signal(signal.SIGTERM)
        w.proc.wait(10)
    wait_for(lambda: broker.depth("default") == 1, 10, what="job back in its queue")


def test_soft_time_limit_stops_the_job_and_its_cleanup_runs(broker: Broker, start_worker, tmp_path):
    log = tmp_path / "runs.jsonl"
    with start_worker("-Q", "default", "-c", "1") as w:
        w.wait_consuming()
        broker.publish_job("test.soft_limit", {"log": str(log)})
        wait_for(lambda: broker.depth("failed_tasks") == 1, 30)
    assert _events(log) == ["run", "cleanup"]
    (dead,) = broker.get_all("failed_tasks")
    assert dead.headers["x-importd-reason"] == "soft-time-limit"


def test_hard_time_limit_kills_the_child_and_counts_as_an_attempt(broker: Broker, start_worker, tmp_path):
    log = tmp_path / "runs.jsonl"
    with start_worker("-Q", "default", "-c", "1") as w:
        w.wait_consuming()
        broker.publish_job("test.hard_limit", {"log": str(log), "seconds": 60})
        wait_for(lambda: broker.depth("failed_tasks") == 1, 60)
        assert "hard time limit exceeded" in w.output()
    assert _events(log) == ["run", "run"]  # max_retries=1: two runs, each killed


def test_child_is_replaced_after_max_tasks_per_child(broker: Broker, start_worker, tmp_path):
    log = tmp_path / "runs.jsonl"
    with start_worker("-Q", "default", "-c", "1", "--max-tasks-per-child", "2") as w:
        w.wait_consuming()
        for _ in range(5):
            broker.publish_job("test.record", {"log": str(log)})
        wait_for(lambda: len(test_tasks.runs(log)) == 5, 30)
    assert len({r["pid"] for r in test_tasks.runs(log)}) == 3


def test_child_that_dies_is_respawned(broker: Broker, start_worker, tmp_path):
    log = tmp_path / "runs.jsonl"
    with start_worker("-Q", "default", "-c", "2") as w:
        w.wait_consuming(2)
        victim = w.child_pids()[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(w.child_pids()) == 2 and victim not in w.child_pids(), 20)
        broker.publish_job("test.record", {"log": str(log)})
        wait_for(lambda: len(test_tasks.runs(log)) == 1, 20)


@pytest.mark.serial
def test_broker_restart_worker_reconnects_and_persistent_messages_survive(broker: Broker, start_worker, tmp_path):
    log = tmp_path / "runs.jsonl"
    with start_worker("-Q", "default", "-c", "1", "--max-tasks-per-child", "0") as w:
        w.wait_consuming()
        # A message waiting in a queue no worker consumes must survive the restart.
        broker.publish_job("import.csv", {"file": "x", "table": "t"}, job_id="survivor")
        rabbitmqctl("stop_app")
        try:
            wait_for(lambda: "broker connection lost" in w.output(), 30)
        finally:
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")
            broker.reconnect()
        wait_for(lambda: w.output().count('"consuming"') >= 2, 60, what="worker reconnected")
        broker.publish_job("test.record", {"log": str(log)})
        wait_for(lambda: len(test_tasks.runs(log)) == 1, 30)
    assert broker.depth("import_queue") == 1


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan is reaped by whatever init this machine has, or not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_children_leave_when_their_supervisor_is_killed(start_worker):
    """Protection proved: PR_SET_PDEATHSIG. Without it the children of a SIGKILLed supervisor
    go on consuming with nobody to enforce their hard time limit or stop them."""
    with start_worker("-Q", "default", "-c", "2") as w:
        w.wait_consuming(2)
        children = w.child_pids()
        assert len(children) == 2
        os.kill(w.proc.pid, signal.SIGKILL)
        wait_for(lambda: not any(_running(pid) for pid in children), 20, what="children gone")


def test_a_child_killed_by_a_signal_at_start_up_is_respawned_with_a_growing_backoff(start_worker):
    """Issue 12 item 9: a child SIGKILLed at start-up (as by SIGSEGV or OOM at import) counts
    toward the respawn backoff: the gaps between its deaths and the next starts grow (1, 2,
    4 s...) instead of a respawn every 0.5 s tick."""
    with start_worker("-Q", "default", "-c", "1",
                      IMPORTD_WORKER_EXTENSIONS="tests.support.crash_ext:attach") as w:
        def events() -> list[dict]:
            out = []
            for line in w.output().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("event") in ("child started", "child died"):
                    out.append(rec)
            return out

        wait_for(lambda: sum(e["event"] == "child started" for e in events()) >= 4, 60,
                 what="four child starts")
        seen = events()
    stamps = [(e["event"], datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))) for e in seen]
    gaps = [(b[1] - a[1]).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)
            if a[0] == "child died" and b[0] == "child started"]
    assert len(gaps) >= 3
    assert all(later > earlier for earlier, later in zip(gaps, gaps[1:], strict=False)), gaps
    assert gaps[2] >= 2.0, gaps  # the third respawn waited at least the backoff's 2 s step


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_a_child_whose_supervisor_died_before_it_asked_to_die_with_it_stops_at_once(settings, tmp_path):
    """Issue 12 item 9: the supervisor's pid is read before the fork and handed to the child.
    Here the "supervisor" forks the child and exits before the child runs ``child_main``: the
    orphan sees that its parent is no longer the pid it was given and SIGTERMs itself before
    it consumes anything. Read after the fork (``os.getppid()``), the pid would already be its
    new parent's, the check would pass, and the orphan would consume with nobody to enforce
    its hard limit (its broker here is a closed port, so the test can see it stay alive)."""
    import dataclasses
    import multiprocessing
    import time

    from importd.worker import supervisor

    child_settings = dataclasses.replace(settings, broker_url="amqp://guest:guest@127.0.0.1:1//")
    report_r, report_w = os.pipe()

    def orphan(parent: int) -> None:
        while os.getppid() == parent:  # the supervisor is gone before the child starts for real
            time.sleep(0.01)
        deadline = multiprocessing.get_context("fork").Value("d", 0.0, lock=False)
        supervisor.child_main(child_settings, ["default"], 0, deadline, None, [], parent)

    pid = os.fork()
    if pid == 0:  # the short-lived "supervisor"
        try:
            parent = os.getpid()
            child = os.fork()
            if child == 0:
                os.close(report_r)
                orphan(parent)
                os._exit(0)
            os.write(report_w, str(child).encode())
        finally:
            os._exit(0)
    os.close(report_w)
    os.waitpid(pid, 0)
    child = int(os.read(report_r, 64))
    os.close(report_r)
    try:
        wait_for(lambda: not _alive(child), 10, what="the orphaned child gone")
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
