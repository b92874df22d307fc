"""One import by the engine alone, in this process, with no broker: ``FILE TABLE [MODE]``.

``FILE`` is a path inside the upload directory, or a key in ``IMPORTD_STORAGE_URL``'s store.

Prints a JSON line: seconds, this process's peak RSS in MB, and the finished job.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import uuid

from importd import logs
from importd.config import Settings
from importd.imports import storage, store
from importd.imports.handlers import run_import_task
from importd.imports.store import JobRecord
from importd.worker.context import JobContext
from importd.worker.messages import Job
from importd.worker.tasks import get


def main(path: str, table: str, mode: str = "atomic") -> int:
    settings = Settings.from_env()
    logs.configure("warning")
    job_id = uuid.uuid4().hex
    with store.connect(settings) as conn:
        store.create_job(conn, JobRecord(id=job_id, target_table=table, file_path=path, mode=mode,
                                         file_size=storage.job_source(settings, path).size,
                                         options={"max_errors": 10**9}))
    spec = get("import.csv")
    assert spec is not None
    job = Job(job_id=job_id, task="import.csv",
              args={"file": path, "table": table, "mode": mode, "max_errors": 10**9})
    ctx = JobContext(job=job, spec=spec, settings=settings, queue="import_queue", log=logs.get("bench"))
    started, cpu = time.perf_counter(), time.process_time()
    run_import_task(ctx)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    with store.connect(settings) as conn:
        rec = store.get_job(conn, job_id)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "rss_mb": rss_mb, "job": rec.to_dict() if rec else {}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
