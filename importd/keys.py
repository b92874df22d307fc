"""Every Redis key importd writes, in one place. ``prefix`` is ``IMPORTD_REDIS_PREFIX``."""

from __future__ import annotations


def job_state(prefix: str, job_id: str) -> str:
    """Hash: state, counts, percent, timestamps of one job."""
    return f"{prefix}:job:{job_id}"


def job_events(prefix: str, job_id: str) -> str:
    """Stream: the job's events, resumable by id (SSE Last-Event-ID)."""
    return f"{prefix}:job:{job_id}:events"


def rate_limit(prefix: str, task: str) -> str:
    """Hash: token bucket of one task type."""
    return f"{prefix}:ratelimit:{task}"
