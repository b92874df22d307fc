"""Issue 12 item 1: one classification of PostgreSQL errors, a state of the server (transient)
or a fault of the file or the table (permanent), used by the run and the triage alike."""

from __future__ import annotations

import psycopg
import pytest

from importd.errors import PermanentError, TransientError
from importd.imports.copy import pgerrors, salvage

#: A state of the server: retried, then dead-lettered (replayable), never a job's FAILURE.
SERVER_STATES = [
    "08000", "08003", "08006", "08001", "08004", "08P01",  # connection
    "25006",  # read_only_sql_transaction: a standby, default_transaction_read_only
    "25P03", "25P04",  # idle-in-transaction / transaction timeout ended the session
    "28000", "28P01",  # authorization changed under us
    "3D000",  # the database is not there (mid-failover)
    "40001", "40P01", "40003",  # serialization failure, deadlock, completion unknown
    "53000", "53100", "53200", "53300", "53400",  # resources: disk full, memory, connections
    "55006", "55P03",  # object in use, lock_timeout
    "57000", "57014", "57P01", "57P02", "57P03", "57P04", "57P05",  # operator, shutdown
    "58000", "58030",  # system, I/O error
    "72000",  # snapshot too old
    "F0000",  # configuration file error
    "XX000",  # internal error
]
#: A fault of the file or the table: the job's FAILURE.
JOB_FAULTS = [
    "22001", "22003", "22007", "22P02", "22P04", "22021",  # data
    "23502", "23503", "23505", "23514",  # integrity
    "21000",  # cardinality
    "42501", "42P01", "42703", "42601",  # privilege, missing table or column, syntax
    "54000", "54011",  # program limits (a row too wide)
    "0A000",  # feature not supported (COPY into a view)
    "P0001",  # a trigger refused the row
    "XX001", "XX002",  # the table's data or index is corrupted
    "25P02",  # in failed transaction: our bug, not the server's
]


@pytest.mark.parametrize("state", SERVER_STATES)
def test_a_state_of_the_server_is_transient(state: str):
    assert pgerrors.is_transient_state(state)
    exc = psycopg.errors.lookup(state)("simulated")
    assert isinstance(pgerrors.translate(exc), TransientError)


@pytest.mark.parametrize("state", JOB_FAULTS)
def test_a_fault_of_the_file_or_the_table_is_permanent(state: str):
    assert not pgerrors.is_transient_state(state)
    exc = psycopg.errors.lookup(state)("simulated")
    assert isinstance(pgerrors.translate(exc), PermanentError)


def test_no_sqlstate_is_transient_for_connection_errors_only():
    assert isinstance(pgerrors.translate(psycopg.OperationalError("server closed the connection")), TransientError)
    assert isinstance(pgerrors.translate(psycopg.InterfaceError("the connection is closed")), TransientError)
    assert isinstance(pgerrors.translate(psycopg.DataError("cannot adapt")), PermanentError)


@pytest.mark.parametrize("state", SERVER_STATES)
def test_what_the_salvage_calls_bad_data_is_never_a_server_state(state: str):
    assert not salvage.is_data_state(state)


def test_the_translated_text_names_the_error_and_is_bounded():
    error = pgerrors.translate(psycopg.errors.ReadOnlySqlTransaction("cannot execute UPDATE " + "x" * 5000))
    assert str(error).startswith("ReadOnlySqlTransaction: cannot execute UPDATE")
    assert len(str(error)) == 2000
