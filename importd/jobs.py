"""What a task handler is given: the job, its settings, and a way to stop in time."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from importd.config import Settings
from importd.errors import SoftTimeLimitExceeded
from importd.messages import Job
from importd.tasks import TaskSpec


@dataclass
class JobContext:
    """One run of one job in a worker child.

    ``deadline`` is the monotonic time of the soft limit; long handlers call :meth:`check`
    between units of work (the import engine does it between batches) so the soft limit
    stops them at a clean point. The worker also raises the exception asynchronously in the
    job thread for handlers that never call it.
    """

    job: Job
    spec: TaskSpec
    settings: Settings
    queue: str
    log: Any
    started: float = field(default_factory=time.monotonic)
    stop: threading.Event = field(default_factory=threading.Event)
    stop_reason: str = ""

    @property
    def deadline(self) -> float:
        return self.started + self.spec.soft_time_limit_s

    def check(self) -> None:
        """Raise if the job must stop now (soft time limit passed, or asked to stop)."""
        if self.stop.is_set() or time.monotonic() >= self.deadline:
            raise SoftTimeLimitExceeded(
                self.stop_reason or f"soft time limit of {self.spec.soft_time_limit_s:g} s exceeded"
            )

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason
        self.stop.set()
