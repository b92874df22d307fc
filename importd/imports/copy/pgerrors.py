"""One classification of PostgreSQL errors: a state of the server, or a fault of the job.

Issue 12 item 1: an error is *transient* when it says something about the server or the
session (the connection went away, the server is shutting down or read-only, out of disk or
connections, a deadlock or serialization failure, a lock not granted in time, an operator
cancel) and *permanent* when it says something about the file or the table (bad data, a
constraint, a missing column, a trigger that refuses the row). A transient error is retried
and, once the retries run out, dead-lettered with its reason, where ``importd replay-dlq``
can run the job again when the server is well; a permanent one is the job's FAILURE.

In doubt, an error is transient: a wrongly transient error costs a few retries before the
job is dead-lettered (and replayable); a wrongly permanent one ends a job for good because
of a passing state of the server (a failover left the worker on a standby, say).

This module is the only place that decides; the import run (``handlers.translate``) and the
triage (which must let server trouble through instead of judging the data by it) both ask
it. It lives in the COPY engine's package because the engine may import nothing of the
job-handling side, and the job-handling side may import the engine.
"""

from __future__ import annotations

import psycopg

from importd.errors import PermanentError, TransientError

#: SQLSTATE classes (first two characters) that are a state of the server: connection
#: exception (08), invalid authorization (28: credentials or pg_hba changed under us),
#: transaction rollback (40: serialization failure, deadlock, statement completion unknown),
#: insufficient resources (53: disk full, out of memory, too many connections), operator
#: intervention (57: query cancelled, admin/crash shutdown, cannot connect now, database
#: dropped, idle session timeout), system error (58: I/O error), snapshot too old (72),
#: configuration file error (F0).
TRANSIENT_CLASSES = frozenset({"08", "28", "40", "53", "57", "58", "72", "F0"})
#: Single SQLSTATEs, in otherwise permanent classes, that are a state of the server:
#: read_only_sql_transaction (25006: a standby, or default_transaction_read_only during
#: maintenance), idle_in_transaction_session_timeout (25P03), transaction_timeout (25P04),
#: invalid_catalog_name (3D000: the database is not there, e.g. mid-failover), object_in_use
#: (55006), lock_not_available (55P03: our lock_timeout), internal_error (XX000: a server
#: fault, not a judgement of the data).
TRANSIENT_CODES = frozenset({"25006", "25P03", "25P04", "3D000", "55006", "55P03", "XX000"})


def is_transient_state(sqlstate: str | None) -> bool:
    """Whether an error with this SQLSTATE can pass (see the module docstring).

    ``None`` or empty (no server error: the connection broke before or while talking) is
    transient. Everything else not listed (data 22, integrity 23, syntax or access 42,
    program limits 54, feature not supported 0A, a trigger's RAISE P0001, corrupted data
    XX001/XX002, ...) is a fault of the file or the table: permanent.
    """
    if not sqlstate:
        return True
    return sqlstate[:2] in TRANSIENT_CLASSES or sqlstate in TRANSIENT_CODES


def is_transient(exc: psycopg.Error) -> bool:
    """Whether a psycopg error can pass.

    A client-side error without a SQLSTATE is transient only when it is about the
    connection (:class:`psycopg.OperationalError`, or :class:`psycopg.InterfaceError` on a
    closed connection); other client-side errors (a value Python cannot adapt) are ours.
    """
    if exc.sqlstate:
        return is_transient_state(exc.sqlstate)
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def translate(exc: psycopg.Error) -> TransientError | PermanentError:
    """The importd error for a psycopg error (its text, type name first, at most 2000 chars)."""
    text = f"{type(exc).__name__}: {str(exc).strip()}"[:2000]
    return TransientError(text) if is_transient(exc) else PermanentError(text)
