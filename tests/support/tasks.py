"""Task types for tests, registered on the ``default`` queue.

Each run appends one JSON line to ``args["log"]`` (pid, attempt, time), so a test can count
runs and measure the gaps between them across processes.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from importd.errors import PermanentError, TransientError
from importd.worker.context import JobContext
from importd.worker.tasks import TaskSpec, register


def _record(ctx: JobContext, event: str = "run") -> int:
    """Append this run to the log file; return how many runs the log holds now."""
    path = Path(ctx.job.args["log"])
    with path.open("a") as f:
        f.write(json.dumps({"event": event, "t": time.time(), "pid": os.getpid(),
                            "attempt": ctx.job.attempt}) + "\n")
    return sum(1 for line in path.read_text().splitlines() if '"run"' in line)


def runs(log: Path | str) -> list[dict[str, object]]:
    path = Path(log)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def record(ctx: JobContext) -> None:
    _record(ctx)


def flaky(ctx: JobContext) -> None:
    """Fails with a transient error for the first ``fail_times`` runs."""
    if _record(ctx) <= int(ctx.job.args.get("fail_times", 2)):
        raise TransientError("simulated deadlock")


def always_fails(ctx: JobContext) -> None:
    _record(ctx)
    raise TransientError("simulated connection loss")


def permanent(ctx: JobContext) -> None:
    _record(ctx)
    raise PermanentError("bad data")


def sleep(ctx: JobContext) -> None:
    """Sleeps without yielding to the loop: heartbeats must come from the owner thread. With
    ``until`` (a path) it ends as soon as that file exists, so a test that looks at the
    running job decides when it ends, however slow the machine (``seconds`` then bounds it)."""
    _record(ctx)
    seconds = float(ctx.job.args.get("seconds", 1))
    until = ctx.job.args.get("until")
    if until is None:
        time.sleep(seconds)
    else:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not os.path.exists(str(until)):
            time.sleep(0.05)
    _record(ctx, "done")


def kill(ctx: JobContext) -> None:
    """SIGKILLs its own process for the first ``kill_times`` runs (all runs if absent)."""
    n = _record(ctx)
    if n <= int(ctx.job.args.get("kill_times", 10**6)):
        time.sleep(float(ctx.job.args.get("after", 0.2)))
        os.kill(os.getpid(), signal.SIGKILL)
    _record(ctx, "done")


def cooperative(ctx: JobContext) -> None:
    """Loops until its soft limit stops it, then records the cleanup."""
    _record(ctx)
    try:
        while True:
            ctx.check()
            time.sleep(0.05)
    finally:
        _record(ctx, "cleanup")


register(TaskSpec("test.record", "default", record))
register(TaskSpec("test.flaky", "default", flaky))
register(TaskSpec("test.always_fails", "default", always_fails))
register(TaskSpec("test.permanent", "default", permanent))
register(TaskSpec("test.sleep", "default", sleep))
register(TaskSpec("test.kill", "default", kill))
#: One run a minute (burst 1): a second run within the minute waits, unless IMPORTD_RATE_LIMIT lifts it.
register(TaskSpec("test.limited", "default", record, rate_limit="1/m"))
register(TaskSpec("test.soft_limit", "default", cooperative, soft_time_limit_s=1.5, hard_time_limit_s=30,
                  max_retries=0))
register(TaskSpec("test.hard_limit", "default", sleep, soft_time_limit_s=0.3, hard_time_limit_s=2,
                  max_retries=1))
register(TaskSpec("test.import_soft", "default", "importd.imports.handlers:run_import_task", soft_time_limit_s=0.3,
                  hard_time_limit_s=60, max_retries=30, on_retry="importd.imports.handlers:on_import_retry",
                  on_give_up="importd.imports.handlers:on_import_give_up"))
