"""The asynchronous soft-limit raise: fired at most once, never after the job disarmed it (issue 12 item 5)."""

import threading

from importd.errors import SoftTimeLimitExceeded
from importd.worker.asyncraise import AsyncRaise


def test_once_the_job_disarmed_the_owner_cannot_raise_in_it():
    """The job thread disarms first thing before handing back its outcome: a fire from the
    owner after that is refused, so nothing can land while the outcome is handed back."""
    stopper = AsyncRaise(SoftTimeLimitExceeded)
    disarmed, fired, outcomes = threading.Event(), threading.Event(), []

    def job() -> None:
        stopper.disarm()
        disarmed.set()
        fired.wait()
        for _ in range(1000):  # plenty of eval-breaker checks where a raise would land
            outcomes.append(len(outcomes))
        outcomes[:] = ["outcome"]

    thread = threading.Thread(target=job)
    thread.start()
    disarmed.wait()
    assert not stopper.fire(thread)
    fired.set()
    thread.join()
    assert outcomes == ["outcome"]


def test_fire_happens_at_most_once():
    stopper = AsyncRaise(SoftTimeLimitExceeded)
    caught, go = [], threading.Event()

    def job() -> None:
        try:
            go.wait()
            while True:
                pass
        except SoftTimeLimitExceeded:
            caught.append(1)
        stopper.disarm()

    thread = threading.Thread(target=job)
    thread.start()
    assert stopper.fire(thread)
    assert not stopper.fire(thread)
    go.set()
    thread.join()
    assert caught == [1]


def test_a_disarm_leaves_no_signal_behind_that_hangs_a_traced_thread():
    """The raise was fired and landed, then the job disarmed: a thread that traces afterwards
    (coverage, a debugger) keeps running. Clearing with SetAsyncExc(NULL) in disarm left the
    interpreter's eval breaker signalled with nothing to deliver, and on CPython 3.11 a traced
    thread then hung at its next call (the unit suite hung after this file, in test_jobrun)."""
    import sys

    stopper = AsyncRaise(SoftTimeLimitExceeded)
    waiting, go, done = threading.Event(), threading.Event(), threading.Event()

    def job() -> None:
        try:
            waiting.set()
            go.wait()
            while True:
                pass
        except SoftTimeLimitExceeded:
            pass  # landed
        stopper.disarm()
        sys.settrace(lambda *_: None)
        try:
            (lambda: None)()  # a call under tracing: hung here before
        finally:
            sys.settrace(None)
        done.set()

    thread = threading.Thread(target=job, daemon=True)
    thread.start()
    waiting.wait()
    assert stopper.fire(thread)
    go.set()
    assert done.wait(10), "a traced call hung after disarm"
