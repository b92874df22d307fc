"""Fixtures on real services: one vhost, one database and one Redis prefix per test run."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from importd.config import Settings
from importd.worker import topology
from importd.worker.publisher import broker_connection
from tests.support import infra

#: Import fixtures (migrated database, allowlisted tables) for every test module; in CI a skip fails.
pytest_plugins = ["tests.support.importing", "tests.support.ci"]


@pytest.fixture(scope="session")
def run_id() -> str:
    return infra.run_id()


@pytest.fixture(scope="session")
def settings(run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    vhost = f"importd-{run_id}"
    database = f"importd_{run_id}"
    infra.create_vhost(vhost)
    infra.create_database(database)
    upload_dir = tmp_path_factory.mktemp("uploads")
    s = Settings(
        broker_url=infra.SERVICES.broker_url(vhost),
        database_url=infra.SERVICES.database_url(database),
        redis_url=infra.SERVICES.redis_url(),
        redis_prefix=f"importd-test:{run_id}",
        upload_dir=upload_dir,
        task_modules="tests.support.tasks",
        tables="",
    )
    with broker_connection(s) as conn:
        topology.declare(conn)
    yield s
    infra.delete_vhost(vhost)
    infra.drop_database(database)
    infra.SERVICES.stop()


@pytest.fixture
def broker(settings: Settings) -> Iterator[infra.Broker]:
    b = infra.Broker(settings)
    b.purge_all()
    yield b
    b.close()


WorkerFactory = Callable[..., AbstractContextManager[infra.WorkerProcess]]


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[WorkerFactory]:
    """Factory: ``with start_worker("-Q", "default", "-c", "1") as w:`` runs a real worker."""
    def start(*args: str, **env: str) -> AbstractContextManager[infra.WorkerProcess]:
        return infra.worker(settings, tmp_path, *args, **env)
    yield start


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under pytest-xdist each test process hands its counts to the controller, which prints
    the one summary (hostile HTTP inputs run in the parallel phase)."""
    from tests.support import report

    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["importd_report"] = report.dump()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    from tests.support import report

    report.merge(getattr(node, "workeroutput", {}).get("importd_report"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.support import report

    if any(report.totals.values()):
        terminalreporter.write_sep("=", "importd fault summary")
        terminalreporter.write_line(report.summary())
    # scripts/test.sh sums its two phases' counts into one line at the end
    save_to = os.environ.get(report.SAVE_ENV)
    if save_to and not hasattr(terminalreporter.config, "workerinput"):
        Path(save_to).write_text(json.dumps(report.dump()))
