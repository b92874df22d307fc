"""Raising an exception inside another thread, and taking the raise back (issue 12 item 5).

CPython has no public Python API for this: ``ctypes.pythonapi.PyThreadState_SetAsyncExc``
is the C API, documented in the C-API reference ("Asynchronous notification"); it is stable
across 3.7+ (the id became ``unsigned long`` in 3.7). The exception is delivered at the
target thread's next eval-breaker check (a call, a backward jump), so it can land anywhere:
in a handler, after it returned, in a failure hook. :class:`AsyncRaise` makes that landing
safe: the owner fires at most once and only while armed, and the job thread disarms it and
lets any pending raise land (and catches it) before it hands its outcome back.
"""

from __future__ import annotations

import ctypes
import threading


def raise_in_thread(ident: int, exc_type: type[BaseException]) -> bool:
    """Schedule ``exc_type`` in thread ``ident``; True if a thread was found."""
    return bool(ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc_type)))


class AsyncRaise:
    """One job thread's asynchronous stop: fired by the owner at most once, disarmed by the job.

    After :meth:`disarm` returns, no exception from this object is pending in or will reach
    the job thread: the owner's :meth:`fire` and the job's disarm take the same lock, and
    disarm takes delivery of whatever was scheduled but not yet delivered.
    """

    def __init__(self, exc_type: type[BaseException], armed: bool = True) -> None:
        self.exc_type = exc_type
        self.fired = False
        self._armed = armed
        self._lock = threading.Lock()

    def arm(self) -> None:
        """Job thread, once it is where a raise can land safely (inside the code that turns
        any exception into an outcome); until then :meth:`fire` does nothing."""
        with self._lock:
            self._armed = True

    def fire(self, thread: threading.Thread) -> bool:
        """Owner thread: raise in ``thread`` unless disarmed or already fired."""
        with self._lock:
            if not self._armed or self.fired or thread.ident is None:
                return False
            self.fired = raise_in_thread(thread.ident, self.exc_type)
            return self.fired

    def disarm(self) -> None:
        """Job thread, first thing before handing back its outcome.

        Once it returns, no raise is pending in this thread and none can come. A raise fired
        and not yet delivered is let land here, at a Python call (where CPython delivers it),
        caught, and the disarm repeated. It is not cleared with ``SetAsyncExc(NULL)``: that
        leaves the interpreter's eval breaker signalled with nothing to deliver, and on CPython
        3.11 any thread under a trace function (coverage, a debugger) then hangs at its next call.
        """
        while True:
            try:
                with self._lock:
                    self._armed = False
                    fired = self.fired
                if fired:
                    _landing_point()
                return
            except self.exc_type:
                continue


def _landing_point() -> None:
    """A Python call: its first instruction is where a pending asynchronous raise lands."""
