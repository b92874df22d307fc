"""Fixtures and helpers for import engine tests: a migrated database, allowlisted tables,
and running the ``import.csv`` handler in-process with a real JobContext."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from importd import logs
from importd.config import Settings
from importd.imports import store
from importd.imports.handlers import run_import_task
from importd.worker import tasks
from importd.worker.context import JobContext
from importd.worker.messages import Job

#: Tables the tests import into (all allowlisted).
TABLES = "public.people,public.items,public.wide,public.big"

PEOPLE_DDL = """
CREATE TABLE people (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    age integer CHECK (age >= 0),
    note text,
    created timestamptz DEFAULT now()
)"""
ITEMS_DDL = "CREATE TABLE items (sku text PRIMARY KEY, qty integer NOT NULL, label text)"
BIG_DDL = "CREATE TABLE big (id bigint PRIMARY KEY, name text, amount numeric(12,2), note text)"


@pytest.fixture(scope="session")
def migrated(settings: Settings) -> Settings:
    store.migrate(settings)
    return settings


@pytest.fixture(scope="session")
def isettings(migrated: Settings) -> Settings:
    """Settings with the test tables allowlisted and the import rate limit lifted."""
    return dataclasses.replace(migrated, tables=TABLES, rate_limit="none")


@pytest.fixture
def db(isettings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection; (re)creates the test tables empty for each test, drops ``wide`` after."""
    with store.connect(isettings) as conn:
        for name, ddl in (("people", PEOPLE_DDL), ("items", ITEMS_DDL), ("big", BIG_DDL)):
            conn.execute(f"DROP TABLE IF EXISTS {name}")
            conn.execute(ddl)
        yield conn
        conn.execute("DROP TABLE IF EXISTS wide")  # made by some tests; others expect it missing


def write(settings: Settings, data: bytes, name: str | None = None) -> Path:
    """A file in the upload directory."""
    path = settings.upload_dir / (name or f"{uuid.uuid4().hex}.csv")
    path.write_bytes(data)
    return path


#: The ``JobContext.resources`` of in-process runs: one per test process, as a worker child has
#: one (so the engine's Runtime keeps its idle connection from one run to the next).
RESOURCES: dict[str, Any] = {}


def context(settings: Settings, job_id: str, args: dict[str, Any], attempt: int = 1) -> JobContext:
    spec = tasks.get("import.csv")
    assert spec is not None
    job = Job(job_id=job_id, task="import.csv", args=args, attempt=attempt)
    return JobContext(job=job, spec=spec, settings=settings, queue="import_queue",
                      log=logs.get("test", job_id=job_id), resources=RESOURCES)


def run_import(settings: Settings, data: bytes | Path, table: str = "people", *, job_id: str | None = None,
               attempt: int = 1, **args: Any) -> tuple[store.JobRecord, BaseException | None]:
    """Run the handler in-process on a message without a job row; return the row and what it raised."""
    path = data if isinstance(data, Path) else write(settings, data)
    job_id = job_id or uuid.uuid4().hex
    raised: BaseException | None = None
    try:
        run_import_task(context(settings, job_id, {"file": str(path), "table": table, **args}, attempt))
    except Exception as exc:  # noqa: BLE001 - returned for the test to assert on
        raised = exc
    with store.connect(settings) as conn:
        rec = store.get_job(conn, job_id)
    assert rec is not None, raised
    return rec, raised


def rejected(settings: Settings, job_id: str) -> list[tuple[Any, ...]]:
    with store.connect(settings) as conn:
        return list(store.iter_rejected_rows(conn, job_id))


def rows(conn: psycopg.Connection[Any], query: str = "SELECT id, name, age, note FROM people ORDER BY id"
         ) -> list[tuple[Any, ...]]:
    return conn.execute(query).fetchall()  # type: ignore[arg-type]


def end_with_lost_final_write(settings: Settings, job_id: str, state: str = "SUCCESS", rows: int = 3) -> None:
    """A job whose worker wrote STARTED and progress to Redis, then its terminal state to
    PostgreSQL, and whose final Redis write was lost (Redis stalled: here, a dead port)."""
    from importd.imports.progress import Progress

    live = Progress(settings)
    live.set_state(job_id, "STARTED", attempt=1, table="public.api_people")
    live.update(job_id, rows=1, bytes=1, total_bytes=10, force=True)
    live.close()
    with store.connect(settings) as conn:
        store.update_job(conn, job_id, state=state, rows_imported=rows, finished_at=store.NOW)
    stalled = Progress(dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0"))
    stalled.set_state(job_id, state, rows=rows)
    stalled.close()
