"""Issue 12 item 9: a second SIGTERM/SIGINT that lands while the supervisor walks its children
(the hard-limit sweep) only sets a flag; the loop kills on its next turn. The handler used to
kill and clear the children there and then, and the sweep it interrupted died with
"dictionary changed size during iteration" (a traceback at shutdown, children left to the
kernel). Here the signal is delivered the way CPython runs a handler: between two bytecodes
of the sweep, at the moment it reads a child's deadline."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from typing import Any

from importd.config import Settings
from importd.worker.supervisor import Child, Supervisor


@dataclass
class _Process:
    pid: int | None = None  # no pid: the supervisor's kill is a no-op
    joined: list[float] = field(default_factory=list)

    def join(self, timeout: float | None = None) -> None:
        self.joined.append(timeout or 0.0)

    def is_alive(self) -> bool:
        return True


@dataclass
class _Value:
    value: Any


class _SignalledWhenRead:
    """A child's hard deadline (past) whose first read runs the supervisor's signal handler."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup, self.fired = sup, False

    @property
    def value(self) -> float:
        if not self.fired:
            self.fired = True
            self.sup._on_signal(signal.SIGTERM, None)
        return time.time() - 60

    @value.setter
    def value(self, _: float) -> None:
        pass


def test_a_second_signal_during_the_hard_limit_sweep_sets_a_flag_and_the_loop_kills():
    sup = Supervisor(Settings(), ["default"], concurrency=3, max_tasks_per_child=0)
    sup.stopping = True  # the first signal came earlier: this one is the second
    processes = [_Process() for _ in range(3)]
    sup.children = {i: Child(i, p, time.monotonic(), _SignalledWhenRead(sup) if i == 0 else _Value(0.0),  # type: ignore[arg-type]
                             _Value(1)) for i, p in enumerate(processes)}  # type: ignore[arg-type]
    sup._enforce_hard_limits()  # raised RuntimeError when the handler cleared the dict
    assert sup.killing and len(sup.children) == 3
    sup._kill_all()  # what the loop does next when killing is set
    assert sup.children == {} and all(p.joined for p in processes)
