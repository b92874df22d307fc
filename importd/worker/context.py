"""What a task handler is given: the job, its settings, and a way to stop in time."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from importd.config import Settings
from importd.errors import SoftTimeLimitExceeded
from importd.worker.bus import Bus
from importd.worker.messages import Job
from importd.worker.tasks import TaskSpec

#: Shortest gap in seconds between two progress events of one job (the engine may report more often).
PROGRESS_MIN_INTERVAL_S = 0.5


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
    #: The child's event bus (None outside a worker: progress events go nowhere).
    events: Bus | None = None
    #: What task modules keep between the jobs of one process (connections, clients), by a
    #: key of their own; the consumer hands every job of its process the same dict and never
    #: looks inside.
    resources: dict[str, Any] = field(default_factory=dict)
    _last_progress: float = 0.0

    @property
    def deadline(self) -> float:
        return self.started + self.spec.soft_time_limit_s

    def check(self) -> None:
        """Raise if the job must stop now (soft time limit passed, or asked to stop)."""
        if self.stop.is_set() or time.monotonic() >= self.deadline:
            raise SoftTimeLimitExceeded(
                self.stop_reason or f"soft time limit of {self.spec.soft_time_limit_s:g} s exceeded"
            )

    def progress(self, **fields: Any) -> None:
        """Report progress (rows=, bytes=, total_bytes=, rejected=) as a ``progress`` job event,
        at most one per :data:`PROGRESS_MIN_INTERVAL_S`; from the job thread."""
        now = time.monotonic()
        if self.events is None or now - self._last_progress < PROGRESS_MIN_INTERVAL_S:
            return
        self._last_progress = now
        self.events.emit("progress", job_id=self.job.job_id, task=self.job.task, attempt=self.job.attempt,
                         queue=self.queue, **fields)

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason
        self.stop.set()
