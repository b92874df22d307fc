"""The states of a job, spelled once (issue 11): the job table, the progress records, the
metrics and the API's schema all name them from here.

``JobState`` is a ``StrEnum``: a member equals its text, so a state read back from
PostgreSQL or Redis (a plain ``str``) compares equal to it, and it goes into SQL and JSON as
its text. This module imports nothing, so any layer may use it.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is: waiting, running, waiting for a retry, or one of the final three."""

    PENDING = "PENDING"
    STARTED = "STARTED"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELLED = "CANCELLED"


#: Every state, in the order of a job's life.
ALL: tuple[JobState, ...] = tuple(JobState)
#: The final states: a job in one of them is never run again (a replay reopens only a FAILURE).
FINAL: frozenset[JobState] = frozenset({JobState.SUCCESS, JobState.FAILURE, JobState.CANCELLED})
#: The final states as a SQL list, for ``state NOT IN (...)`` in the job table's queries.
FINAL_SQL = ", ".join(f"'{state}'" for state in ALL if state in FINAL)
