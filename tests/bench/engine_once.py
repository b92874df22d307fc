"""One import by the engine alone, in this process, with no broker: ``FILE TABLE [MODE [OPTIONS]]``.

``FILE`` is a path inside the upload directory, or a key in ``IMPORTD_STORAGE_URL``'s store.

``OPTIONS`` is the job's options as JSON (say ``{"on_conflict": "update", "conflict_key": ["id"]}``).
Prints a JSON line: seconds, this process's CPU seconds and peak RSS in MB, the CPU seconds of
the PostgreSQL backends of every import connection (read from ``/proc/<pid>/stat`` just before
each closes, the job's own connection at the end), the seconds spent reading the header (from
S3: waiting for the first bytes), and the finished job.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from importd import logs
from importd.config import Settings
from importd.imports import handlers, run, storage, store
from importd.imports.handlers import run_import_task
from importd.imports.store import JobRecord
from importd.worker import publisher  # noqa: F401 - loaded in a worker already; not the import's time
from importd.worker.context import JobContext
from importd.worker.messages import Job
from importd.worker.tasks import get

_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """utime + stime of a process on this host, in seconds (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


class BackendClock:
    """The CPU of the backends of the import connections this process opens (the server runs
    on this host, so ``/proc`` shows them); read when a connection closes, or at :meth:`total`."""

    def __init__(self) -> None:
        self.start: dict[int, float] = {}
        self.spent: dict[int, float] = {}
        self.open: dict[int, Any] = {}
        original = run.connect

        def connect(settings: Settings) -> Any:
            conn = original(settings)
            pid = conn.info.backend_pid
            self.start[pid] = process_cpu(pid)
            self.open[pid] = conn
            close = conn.close

            def closing() -> None:
                if pid in self.open:
                    self.spent[pid] = process_cpu(pid) - self.start[pid]
                    del self.open[pid]
                close()

            conn.close = closing  # type: ignore[method-assign]
            return conn

        run.connect = handlers.connect = connect  # type: ignore[assignment]

    def total(self) -> float:
        for pid in list(self.open):
            self.spent[pid] = process_cpu(pid) - self.start[pid]
        return sum(self.spent.values())


class HeaderClock:
    """Seconds the import spent reading the file's header: from a store, the wait for the
    first GET's first bytes (the engine has nothing else to do meanwhile)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        original = run.scan.read_header

        def read_header(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        run.scan.read_header = read_header  # type: ignore[assignment]


def main(path: str, table: str, mode: str = "atomic", options: str = "{}") -> int:
    settings = Settings.from_env()
    logs.configure("warning")
    clock, header = BackendClock(), HeaderClock()
    job_id = uuid.uuid4().hex
    opts = {"max_errors": 10**9, **json.loads(options)}
    with store.connect(settings) as conn:
        store.create_job(conn, JobRecord(id=job_id, target_table=table, file_path=path, mode=mode,
                                         file_size=storage.job_source(settings, path).size, options=opts))
    spec = get("import.csv")
    assert spec is not None
    job = Job(job_id=job_id, task="import.csv", args={"file": path, "table": table, "mode": mode,
                                                      "max_errors": 10**9, "options": json.loads(options)})
    ctx = JobContext(job=job, spec=spec, settings=settings, queue="import_queue", log=logs.get("bench"))
    started, cpu = time.perf_counter(), time.process_time()
    run_import_task(ctx)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    backend = clock.total()
    with store.connect(settings) as conn:
        rec = store.get_job(conn, job_id)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "backend_s": backend, "rss_mb": rss_mb,
                      "header_s": header.seconds, "job": rec.to_dict() if rec else {}}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
