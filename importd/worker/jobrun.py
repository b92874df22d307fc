"""What a job thread does with one delivery: run the handler, decide exactly one outcome.

Issue 12 item 5: the asynchronous SoftTimeLimitExceeded (:mod:`importd.worker.asyncraise`)
can land anywhere, also after the handler returned or inside the failure path. So each
outcome is built whole and stored in one assignment; :func:`run`'s ``finally`` first
disarms the raise (nothing can land after that), then returns what was decided, or, if a
raise cut the deciding short, a retry-or-dead-letter outcome decided without hooks.
"""

from __future__ import annotations

import time
from dataclasses import replace

from importd.errors import Deferred, InvalidMessage, PermanentError, SoftTimeLimitExceeded
from importd.worker import retry
from importd.worker.asyncraise import AsyncRaise
from importd.worker.context import JobContext
from importd.worker.outcomes import Kind, Outcome, WorkerLost, failed


def run(ctx: JobContext, base: Outcome, lost: bool, stopper: AsyncRaise) -> Outcome:
    """Run the job once; always returns one outcome, with the async raise disarmed.

    ``stopper`` comes unarmed and is armed first thing inside the ``try``: a raise can land
    only where it becomes an outcome (before, the thread could die before its first line).
    """
    outcome: Outcome | None = None
    failure: BaseException | None = None
    try:
        stopper.arm()
        outcome = attempt(ctx, base, lost)
    except BaseException as exc:  # noqa: BLE001 - a raise that landed outside the handler
        failure = exc
    finally:
        while True:  # the raise may land as disarm is called (a call is where it lands): once
            try:
                stopper.disarm()
            except SoftTimeLimitExceeded:
                continue
            break
        if outcome is None:
            outcome = late_failure(ctx, base, failure)
    return replace(outcome, duration_s=time.monotonic() - ctx.started)


def attempt(ctx: JobContext, base: Outcome, lost: bool) -> Outcome:
    """Run the handler once and return the outcome it earned (``base`` is the ACK)."""
    try:
        if lost:
            raise WorkerLost("redelivered: the previous delivery was never acked (worker lost)")
        ctx.log.info("job started")
        handler = ctx.spec.resolve("handler")
        assert handler is not None
        handler(ctx)
    except Deferred as exc:
        ctx.log.info("job deferred", reason=exc.reason)
        return replace(base, kind=Kind.DEFER, reason=exc.reason)
    except InvalidMessage as exc:  # the handler found the args unusable and no job to fail
        ctx.log.warning("invalid job dead-lettered", reason=exc.reason, error=str(exc))
        return replace(base, kind=Kind.DEAD_LETTER, reason=exc.reason, error=str(exc))
    except PermanentError as exc:
        ctx.log.warning("job failed permanently", error=str(exc))
        return replace(base, error=f"{type(exc).__name__}: {exc}"[:2000])
    except BaseException as exc:  # noqa: BLE001 - every other failure is retried
        return fail(ctx, base, exc)
    ctx.log.info("job succeeded", duration_s=round(time.monotonic() - ctx.started, 3))
    return base


def fail(ctx: JobContext, base: Outcome, exc: BaseException) -> Outcome:
    """The failure hook, then the retry-or-dead-letter outcome of ``exc``."""
    gives_up = retry.decide(ctx.job.attempt, ctx.spec.max_retries).gives_up
    hook = ctx.spec.resolve("on_give_up" if gives_up else "on_retry")
    try:
        if hook is not None:
            hook(ctx, exc)
    except Exception as hook_exc:  # noqa: BLE001 - a hook must not lose the message
        ctx.log.error("hook failed", error=str(hook_exc))
    outcome = failed(base, ctx.job.attempt, ctx.spec.max_retries, exc)
    if outcome.kind is Kind.DEAD_LETTER:
        ctx.log.error("job dead-lettered", error=outcome.error, attempts=ctx.job.attempt)
    else:
        ctx.log.warning("job failed, will retry", error=outcome.error, step=outcome.step,
                        next_attempt=outcome.attempt)
    return outcome


def late_failure(ctx: JobContext, base: Outcome, exc: BaseException | None) -> Outcome:
    """The outcome when a raise cut the deciding short (the raise is disarmed by now)."""
    exc = exc or SoftTimeLimitExceeded("interrupted before an outcome was decided")
    outcome = failed(base, ctx.job.attempt, ctx.spec.max_retries, exc)
    ctx.log.error("job interrupted outside its handler", error=outcome.error, outcome=outcome.kind.value)
    return outcome
