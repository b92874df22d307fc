"""The prefork supervisor: forks worker children, keeps them alive, enforces hard limits.

Shutdown order, written once here: SIGTERM (or a first SIGINT) -> children get SIGTERM, stop
consuming, finish their job, ack, exit 0 -> the supervisor waits up to the grace period,
then exits 0. A second SIGTERM or SIGINT kills the children at once (their unacked jobs are
redelivered by the broker) and exits.

Each child reports the hard deadline of its running job in shared memory; the supervisor
SIGKILLs a child past it (a job stuck in C code cannot be stopped from inside). Each child
also flags in shared memory that it consumes; systemd hears READY=1 only once every child
does, and WATCHDOG=1 every half ``WATCHDOG_USEC`` while all children are alive.
"""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from importd import logs
from importd.config import Settings
from importd.errors import ExtensionError, TopologyMismatch
from importd.worker import reconnect, tasks, topology
from importd.worker.consumer import Consumer, Slot
from importd.worker.publisher import broker_connection

#: Seconds between the supervisor's checks of its children.
TICK_S = 0.5
#: A child that exits with an error sooner than this after its start counts as a start-up
#: failure and delays the next respawn; so does one killed by a signal before it consumed
#: (SIGSEGV or OOM at import: issue 12 item 9), but not one killed later (hard limit, operator).
EARLY_DEATH_S = 5.0
#: Largest wait before respawning a child that keeps dying at start-up.
MAX_RESPAWN_DELAY_S = 30.0
#: Exit code when the broker's topology conflicts with ours (EX_CONFIG).
EXIT_CONFIG = 78

#: Signals that stop a worker (blocked around a fork, see :meth:`Supervisor._spawn`).
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
#: ``prctl`` option: the signal a process gets when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1

_ctx = multiprocessing.get_context("fork")


@dataclass
class Child:
    index: int
    process: Any
    started: float
    deadline: Synchronized  # type: ignore[type-arg]
    consuming: Synchronized  # type: ignore[type-arg]


def child_main(settings: Settings, queues: list[str], max_tasks: int, deadline: Any,
               consuming: Any | None = None, extensions: list[Callable[..., None]] | None = None,
               parent: int | None = None) -> None:
    """Entry point of a forked child: its own logging, its own connection.

    The child starts with SIGTERM and SIGINT blocked (see :meth:`Supervisor._spawn`) and the
    supervisor's handlers: it restores the default action (a stop before it consumes anything
    just ends it), asks to die with its supervisor, and unblocks; the consumer then installs
    its own handlers. ``parent`` is the supervisor's pid, read before the fork (issue 12
    item 9): ``os.getppid()`` after the fork would already name init if the supervisor died
    in between, and the orphan would never notice.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    _die_with_parent(os.getppid() if parent is None else parent)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    logs.configure(settings.log_level)
    tasks.load_modules(settings.task_module_list)

    def set_deadline(value: float) -> None:
        deadline.value = value

    def mark_consuming(*_: Any) -> None:
        if consuming is not None:
            consuming.value = 1

    consumer = Consumer(settings, queues, max_tasks=max_tasks or None, slot=Slot(set_deadline),
                        extensions=[*(extensions or []), mark_consuming])
    consumer.install_signal_handlers()
    os._exit(consumer.run())


def _die_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM when the supervisor dies (Linux ``PR_SET_PDEATHSIG``).

    A child that outlived a SIGKILLed or crashed supervisor would go on consuming with nobody
    to enforce its hard time limit or replace it; with this it finishes its job and leaves, as
    on a normal stop. Elsewhere the call is skipped.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the supervisor died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def load_extensions(paths: list[str]) -> list[Callable[..., None]]:
    """The consumer extensions named in ``IMPORTD_WORKER_EXTENSIONS`` (``module:function``).

    Loaded once in the supervisor, before forking, so a missing or broken one stops the
    worker at start with its name instead of leaving children without ``ping`` or metrics.
    """
    found = []
    for path in paths:
        module, _, name = path.partition(":")
        try:
            found.append(getattr(importlib.import_module(module), name or "attach"))
        except (ImportError, AttributeError) as exc:
            raise ExtensionError(f"worker extension {path!r} cannot be loaded: {exc}") from exc
    return found


class Supervisor:
    """Runs ``concurrency`` children consuming ``queues``.

    Parameters: ``settings``; ``queues``; ``concurrency`` (children, default from settings);
    ``max_tasks_per_child`` (a child is replaced after that many jobs; 0: never);
    ``notify``: called with sd_notify-style strings ("READY=1", "STATUS=...").
    """

    def __init__(self, settings: Settings, queues: list[str], concurrency: int,
                 max_tasks_per_child: int, notify: Callable[[str], object] | None = None) -> None:
        self.settings = settings
        self.queues = queues
        self.concurrency = concurrency
        self.max_tasks_per_child = max_tasks_per_child
        self.notify: Callable[[str], object] = notify or (lambda _: None)
        self.log = logs.get("importd.worker.supervisor")
        self.children: dict[int, Child] = {}
        self.stopping = False
        self.killing = False
        self._respawn_delay = 0.0
        self._respawn_at = 0.0
        self._ready_sent = False
        self._watchdog_s = watchdog_interval_s()
        self._watchdog_at = 0.0
        self._status = ""
        self.extensions: list[Callable[..., None]] = []

    def run(self) -> int:
        try:
            self.extensions = load_extensions(self.settings.worker_extension_list)
        except ExtensionError as exc:
            self.log.error("worker extension failed to load", error=str(exc))
            return EXIT_CONFIG
        try:
            self._declare()
        except TopologyMismatch as exc:
            self.log.error("broker topology conflict", error=str(exc))
            return EXIT_CONFIG
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for index in range(self.concurrency):
            self._spawn(index)
        self.log.info("worker started", queues=self.queues, concurrency=self.concurrency, pid=os.getpid())
        while self.children or not self.stopping:
            if self.killing:
                self._kill_all()
                break
            self._reap()
            self._enforce_hard_limits()
            if not self.stopping:
                self._respawn_missing()
            elif time.monotonic() > self._stop_deadline:
                self.log.warning("grace period over, killing children", left=len(self.children))
                self._kill_all()
                break
            self._notify_systemd()
            time.sleep(TICK_S)
        self._reap()
        self.log.info("worker stopped")
        return 0

    def healthy(self) -> bool:
        return self.stopping or len(self.children) == self.concurrency

    def _notify_systemd(self) -> None:
        """READY=1 once every child consumes; WATCHDOG=1 at half the interval while healthy."""
        consuming = sum(1 for c in self.children.values() if c.consuming.value)
        busy = sum(1 for c in self.children.values() if c.deadline.value)
        if not self._ready_sent and not self.stopping and consuming == self.concurrency:
            self._ready_sent = True
            self.notify("READY=1")
        status = ("stopping: waiting for {busy} running job(s)" if self.stopping else
                  "{consuming}/{n} children consuming {queues}, {busy} busy").format(
            busy=busy, consuming=consuming, n=self.concurrency, queues=",".join(self.queues))
        if status != self._status:
            self._status = status
            self.notify(f"STATUS={status}")
        now = time.monotonic()
        if self._watchdog_s and self._ready_sent and now >= self._watchdog_at and self.healthy():
            self._watchdog_at = now + self._watchdog_s
            self.notify("WATCHDOG=1")

    def _declare(self) -> None:
        """Declare once up front so a topology conflict stops the worker with a clear message."""
        for attempt in reconnect.retrying(lambda exc: not isinstance(exc, TopologyMismatch), self.log,
                                          "broker not reachable, retrying"):
            with attempt:
                with broker_connection(self.settings) as conn:
                    topology.declare(conn, self.settings.queue_type)

    def _on_signal(self, signum: int, _: Any) -> None:
        """First signal: stop gracefully. Second: set ``killing``; the loop kills (issue 12 item 9:
        killing here, in a handler that may interrupt the loop mid-iteration over the children,
        changed the dict under it)."""
        if self.stopping:
            self.log.warning("second signal, exiting at once", signal=signum)
            self.killing = True
            return
        self.log.info("shutting down: finishing running jobs", signal=signum,
                      grace_s=self.settings.shutdown_grace_s)
        self.notify("STOPPING=1")
        self.stopping = True
        self._stop_deadline = time.monotonic() + self.settings.shutdown_grace_s
        for child in list(self.children.values()):
            _signal(child.process.pid, signal.SIGTERM)

    def _spawn(self, index: int) -> None:
        """Fork child ``index`` with the stop signals blocked until it is in ``children``: a
        SIGTERM arriving meanwhile then reaches it through :meth:`_on_signal` (and none is
        started once stopping), instead of leaving a child nobody told to stop."""
        deadline = _ctx.Value("d", 0.0, lock=False)
        consuming = _ctx.Value("b", 0, lock=False)
        process = _ctx.Process(target=child_main, name=f"importd-child-{index}",
                               args=(self.settings, self.queues, self.max_tasks_per_child, deadline, consuming,
                                     self.extensions, os.getpid()))
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            if self.stopping:
                return
            process.start()
            self.children[index] = Child(index, process, time.monotonic(), deadline, consuming)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self.log.info("child started", child=index, child_pid=process.pid)

    def _reap(self) -> None:
        for index, child in list(self.children.items()):
            if child.process.is_alive():
                continue
            child.process.join()
            code = child.process.exitcode
            del self.children[index]
            lived = time.monotonic() - child.started
            if code == 0:
                self.log.info("child exited", child=index, exitcode=code)
                self._respawn_delay = 0.0
            else:
                self.log.warning("child died", child=index, exitcode=code, lived_s=round(lived, 1))
                if _start_up_failure(code, lived, bool(child.consuming.value)):
                    self._respawn_delay = min(MAX_RESPAWN_DELAY_S, max(1.0, self._respawn_delay * 2))
                    self._respawn_at = time.monotonic() + self._respawn_delay
                else:
                    self._respawn_delay = 0.0

    def _respawn_missing(self) -> None:
        if time.monotonic() < self._respawn_at:
            return
        for index in range(self.concurrency):
            if index not in self.children:
                self._spawn(index)

    def _enforce_hard_limits(self) -> None:
        now = time.time()
        for index, child in list(self.children.items()):
            deadline = child.deadline.value
            if deadline and now > deadline:
                self.log.error("hard time limit exceeded, killing child", child=index,
                               child_pid=child.process.pid)
                child.deadline.value = 0.0
                _signal(child.process.pid, signal.SIGKILL)

    def _kill_all(self) -> None:
        children = list(self.children.values())
        for child in children:
            _signal(child.process.pid, signal.SIGKILL)
        for child in children:
            child.process.join(timeout=5)
        self.children.clear()


def _start_up_failure(code: int | None, lived_s: float, consumed: bool) -> bool:
    """True if a dead child failed at start-up, so the next respawn waits (backoff).

    An error exit soon after the start, or any signal death before the child consumed (a
    SIGSEGV or OOM kill at import would otherwise respawn every tick).
    """
    if code is None or code == 0:
        return False
    return (code > 0 and lived_s < EARLY_DEATH_S) or (code < 0 and not consumed)


def watchdog_interval_s() -> float:
    """Half of systemd's ``WATCHDOG_USEC`` in seconds (0: no watchdog for this process)."""
    usec, pid = os.environ.get("WATCHDOG_USEC", ""), os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid.isdigit() and int(pid) != os.getpid()):
        return 0.0
    return int(usec) / 2 / 1_000_000


def _signal(pid: int | None, signum: int) -> None:
    if pid:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
