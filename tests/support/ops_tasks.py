"""Task types for the operations tests (DLQ replay, events, metrics), on the ``default`` queue.

``ops.fail_times`` fails its first ``fail_times`` runs and has no retries, so a failure is
dead-lettered at once: a DLQ fills in a second instead of after the 2+4+8 s backoff. Each run
appends one JSON line to ``<dir>/<job_id>.jsonl`` so tests can tell which jobs completed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from importd.errors import TransientError
from importd.worker.context import JobContext
from importd.worker.tasks import TaskSpec, register


def runs(directory: Path | str, job_id: str) -> list[dict[str, object]]:
    path = Path(directory) / f"{job_id}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def completed(directory: Path | str, job_id: str) -> bool:
    return any(r["event"] == "ok" for r in runs(directory, job_id))


def fail_times(ctx: JobContext) -> None:
    directory = Path(ctx.job.args["dir"])
    before = len(runs(directory, ctx.job.job_id))
    failing = before < int(ctx.job.args.get("fail_times", 0))
    time.sleep(float(ctx.job.args.get("seconds", 0)))
    with (directory / f"{ctx.job.job_id}.jsonl").open("a") as f:
        f.write(json.dumps({"event": "fail" if failing else "ok", "attempt": ctx.job.attempt,
                            "pid": os.getpid(), "t": time.time()}) + "\n")
    if failing:
        raise TransientError("simulated failure")


register(TaskSpec("ops.fail_times", "default", fail_times, max_retries=0))
