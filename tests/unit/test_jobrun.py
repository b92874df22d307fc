"""Issue 12 item 5: wherever the asynchronous SoftTimeLimitExceeded lands in a job thread, the
thread hands back exactly one outcome.

``PyThreadState_SetAsyncExc`` delivers the exception at the thread's next eval-breaker check,
so it can land at any call: in the handler, after it returned, in the failure hook, in the
code that builds the outcome, as the raise is disarmed. Firing the real raise at a chosen
place cannot be timed, so a trace function raises it instead, as the n-th function call
starts, for every n: the places the real raise lands, each tried once. Like the real one it fires at most once and
only while the raise is armed (:class:`~importd.worker.asyncraise.AsyncRaise`).

The end-to-end test (tests/integration/test_consumer.py) lands the raise where CPython's
timing puts it, which is inside the handler or the hook: there the old code already coped.
Here the places after them are reached too: before the fix, a raise landing in the failure
path after the hook (``ctx.log.warning``, the retry decision) or after ``job succeeded`` left
the thread without an outcome and the delivery unacked until the hard kill.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

import pytest

from importd import logs
from importd.config import Settings
from importd.errors import Deferred, InvalidMessage, PermanentError, SoftTimeLimitExceeded, TransientError
from importd.worker import jobrun
from importd.worker.asyncraise import AsyncRaise
from importd.worker.context import JobContext
from importd.worker.messages import Job
from importd.worker.outcomes import Kind, Outcome
from importd.worker.tasks import TaskSpec


def succeeds(ctx: JobContext) -> None:
    ctx.log.info("working")


def transient(ctx: JobContext) -> None:
    raise TransientError("the database went away")


def permanent(ctx: JobContext) -> None:
    raise PermanentError("bad data")


def deferred(ctx: JobContext) -> None:
    raise Deferred("locked")


def invalid(ctx: JobContext) -> None:
    raise InvalidMessage("bad-args", "no row")


def hook(ctx: JobContext, exc: BaseException) -> None:
    ctx.log.info("hook ran", error=str(exc))


class Landing:
    """Trace function: raise SoftTimeLimitExceeded as the ``at``-th Python function called
    while ``stopper`` is armed starts (0: never; count them). That is where CPython 3.11
    delivers an asynchronous exception: at a function's first instruction (``RESUME``) or a
    backward jump, never in the middle of C code such as a lock's ``__exit__``."""

    def __init__(self, stopper: AsyncRaise, at: int) -> None:
        self.stopper, self.at, self.lines, self.fired = stopper, at, 0, False

    def __call__(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "call" and self.stopper._armed and not self.fired:
            self.lines += 1
            if self.lines == self.at:
                self.fired = True
                raise SoftTimeLimitExceeded("landed")
        return None


def _run(handler: Any, attempt: int, at: int, lost: bool = False) -> tuple[Outcome, Landing]:
    spec = TaskSpec("test.jobrun", "default", handler, max_retries=3, on_retry=hook, on_give_up=hook)
    ctx = JobContext(job=Job("j1", "test.jobrun", {}, attempt=attempt), spec=spec, settings=Settings(),
                     queue="default", log=logs.get("test.jobrun"))
    stopper = AsyncRaise(SoftTimeLimitExceeded, armed=False)  # as the consumer makes it
    base = Outcome(Kind.ACK, object(), "default", 0, job=ctx.job, attempt=attempt)
    landing = Landing(stopper, at)
    gc.disable()  # no gc callback (pytest has one) runs in the window: a raise there is only "ignored"
    sys.settrace(landing)
    try:
        outcome = jobrun.run(ctx, base, lost, stopper)
    finally:
        sys.settrace(None)
        gc.enable()
    return outcome, landing


@pytest.mark.parametrize("attempt", [1, 4], ids=["first", "last"])
@pytest.mark.parametrize("handler", [succeeds, transient, permanent, deferred, invalid])
@pytest.mark.parametrize("lost", [False, True], ids=["delivered", "redelivered"])
def test_a_soft_limit_raise_landing_at_any_line_leaves_exactly_one_outcome(handler: Any, attempt: int, lost: bool):
    _run(handler, attempt, at=0, lost=lost)  # warm-up: first calls fill caches (logging, lazy imports)
    _, counted = _run(handler, attempt, at=0, lost=lost)
    assert counted.lines > 5  # the places there are to land
    landed = 0
    for at in range(1, 2 * counted.lines + 1):  # the count may vary a little between runs (caches, gc)
        outcome, landing = _run(handler, attempt, at, lost)  # returns: never raises, never hangs
        assert isinstance(outcome, Outcome) and outcome.kind in Kind, (at, outcome)
        if outcome.kind in (Kind.RETRY, Kind.DEAD_LETTER):
            assert outcome.reason and outcome.error, (at, outcome)
        if outcome.kind is Kind.RETRY:
            assert outcome.attempt == attempt + 1
        if not landing.fired:
            break  # past the last call of this run
        landed += 1
    assert landed >= counted.lines - 2, (landed, counted.lines)
