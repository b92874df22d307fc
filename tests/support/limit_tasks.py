"""Task types that make the soft-limit raise land outside a handler's normal flow (issue 12 item 5).

The worker raises SoftTimeLimitExceeded in a job thread with ``PyThreadState_SetAsyncExc``;
it is delivered at the thread's next eval-breaker check, wherever that is. These handlers and
hooks schedule that same raise on their own thread as their last act, so it lands at the end
of a handler that succeeded, or of the on_retry hook in the failure path. Only the first
attempt injects; the retry succeeds. Workers load this module with
``IMPORTD_TASK_MODULES=tests.support.tasks,tests.support.limit_tasks`` (:data:`MODULES`).
"""

from __future__ import annotations

import threading

from importd.errors import SoftTimeLimitExceeded, TransientError
from importd.worker.asyncraise import raise_in_thread
from importd.worker.context import JobContext
from importd.worker.tasks import TaskSpec, register
from tests.support.tasks import _record

#: Task modules a worker needs for these tasks.
MODULES = "tests.support.tasks,tests.support.limit_tasks"
#: A hard limit far above any test's wait: a delivery left unacked would stay so until it.
HARD_S = 600.0


def _raise_here() -> None:
    raise_in_thread(threading.get_ident(), SoftTimeLimitExceeded)


def succeeds(ctx: JobContext) -> None:
    """Succeeds, but on attempt 1 the raise lands as it returns (the at-the-deadline case)."""
    _record(ctx)
    if ctx.job.attempt == 1:
        _raise_here()


def fails(ctx: JobContext) -> None:
    """Fails on attempt 1 (its on_retry hook then gets the raise), succeeds after."""
    _record(ctx)
    if ctx.job.attempt == 1:
        raise TransientError("first attempt fails")


def hook(ctx: JobContext, exc: BaseException) -> None:
    """on_retry hook: the raise lands as it returns, inside the failure path."""
    _record(ctx, "hook")
    _raise_here()


def busy(ctx: JobContext) -> None:
    """Ignores the cooperative stop (a loop in Python that never calls ``ctx.check``): only the
    asynchronous raise, ASYNC_RAISE_AFTER_S past the soft limit, ends it."""
    _record(ctx)
    while True:
        sum(range(1000))


register(TaskSpec("test.raise_after_success", "default", succeeds, hard_time_limit_s=HARD_S))
register(TaskSpec("test.busy_past_soft_limit", "default", busy, soft_time_limit_s=0.5, hard_time_limit_s=HARD_S,
                  max_retries=0))
register(TaskSpec("test.raise_after_failure", "default", fails, on_retry=hook, hard_time_limit_s=HARD_S))
