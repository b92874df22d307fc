"""Typed errors: what the worker does with a failure depends only on its class.

Library exceptions (amqp, psycopg, redis) are translated into these at the boundary, so the
consumer loop never needs to know which library raised.
"""

from __future__ import annotations


class ImportdError(Exception):
    """Base class of every error importd raises on purpose."""


class TransientError(ImportdError):
    """A failure that can pass: the job is retried through the delay queues."""


class PermanentError(ImportdError):
    """A failure that cannot pass: a job outcome (FAILURE), acked, never retried."""


class SoftTimeLimitExceeded(TransientError):
    """Raised inside a job when it passes its task's soft time limit; counts as an attempt."""


class Deferred(ImportdError):
    """The job cannot start now (rate limit, another delivery holds its lock).

    It goes back through the first delay queue without using up an attempt, so the worker
    does not sit on a delivery that other work could use.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidMessage(ImportdError):
    """A delivery that cannot be decoded, validated or routed to a known task."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class TopologyMismatch(ImportdError):
    """A queue exists on the broker with arguments other than ours (AMQP 406)."""


class PublishError(TransientError):
    """A publish was returned (unroutable) or not confirmed by the broker."""


class ExtensionError(ImportdError):
    """A worker extension listed in ``IMPORTD_WORKER_EXTENSIONS`` cannot be loaded (exit 78)."""
