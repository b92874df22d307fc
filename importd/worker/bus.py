"""A worker child's in-process event bus: job events from any thread, delivered in one.

The consumer emits job events (received, started, succeeded, failed, retried, deferred,
dead-lettered; the import engine adds progress from the job thread). Listeners (the events
exchange, metrics) are called only when the connection's owner thread flushes the bus between
``drain_events`` calls, so a listener may use the connection, and a slow or failing listener
never touches the job thread.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

Listener = Callable[[str, dict[str, Any]], None]


class Bus:
    """Queue of ``(event, fields)``; :meth:`emit` from any thread, :meth:`flush` in the owner."""

    def __init__(self, log: Any) -> None:
        self.listeners: list[Listener] = []
        self._queue: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self._log = log

    def emit(self, event: str, **fields: Any) -> None:
        if self.listeners:  # nobody listens: nothing is queued
            self._queue.put((event, fields))

    def flush(self) -> None:
        while not self._queue.empty():
            event, fields = self._queue.get_nowait()
            for listener in list(self.listeners):
                try:
                    listener(event, fields)
                except Exception as exc:  # noqa: BLE001 - observers never hurt the loop
                    self._log.warning("event listener failed", event_type=event, error=str(exc))
