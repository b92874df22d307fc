"""Salvaging a batch PostgreSQL refused, fast: byte ranges, not record objects.

The batch is sent again in chunks cut at record boundaries; the line of each failure names
the bad record, so each bad row costs one failed COPY and Python never works per good row.
Round trips dominate, so it talks to libpq directly (``conn.pgconn``). Details:
docs/importing.md, "Speed".
"""

from __future__ import annotations

import re
import select
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq

from importd.imports.copy import scan
from importd.imports.copy.scan import CR, NL

#: Smallest and largest salvage chunk, in bytes.
MIN_CHUNK, MAX_CHUNK = 2 * 1024, 1024 * 1024
#: First chunk size of a salvage.
START_CHUNK = 32 * 1024
#: Records carried over from a failed attempt are sent without a new chunk past this size.
MAX_PREFIX = 256 * 1024
SAVEPOINT = b"importd_sub"
#: SQLSTATE classes (data exception, integrity, cardinality) and codes (row too big) of bad data.
DATA_ERROR_CLASSES = ("22", "23", "21")
DATA_ERROR_CODES = ("54000",)
#: Where PostgreSQL names the line (and column) of a COPY error in the error's context.
CONTEXT_LINE = re.compile(r"line (\d+)(?:, column ([^:]+))?")
#: Polls of the socket before sleeping in select() for an answer (a wake-up from select
#: costs more than the round trip itself on a VM; PostgreSQL answers most in microseconds).
SPIN = 100
#: Seconds to wait on the socket before checking again (the wait itself has no timeout).
POLL_S = 5.0


@dataclass(frozen=True)
class Failure:
    """The parts of a PostgreSQL error the salvage needs (from a result or an exception)."""

    sqlstate: str
    message_primary: str
    context: str
    column_name: str | None

    @classmethod
    def from_exception(cls, exc: psycopg.Error) -> Failure:
        return cls(exc.sqlstate or "", exc.diag.message_primary or str(exc).splitlines()[0],
                   exc.diag.context or "", exc.diag.column_name)

    @classmethod
    def from_result(cls, res: pq.abc.PGresult) -> Failure:
        def field(code: pq.DiagnosticField) -> str:
            value = res.error_field(code)
            return value.decode("utf-8", "replace") if value else ""

        return cls(field(pq.DiagnosticField.SQLSTATE), field(pq.DiagnosticField.MESSAGE_PRIMARY),
                   field(pq.DiagnosticField.CONTEXT), field(pq.DiagnosticField.COLUMN_NAME) or None)

    def error(self) -> psycopg.Error:
        """The psycopg exception class of this SQLSTATE (for errors that are not bad data)."""
        try:
            cls = psycopg.errors.lookup(self.sqlstate)
        except KeyError:
            cls = psycopg.DatabaseError
        return cls(f"{self.message_primary} ({self.context})" if self.context else self.message_primary)


class RawCopy:
    """COPY attempts on one connection, each under the savepoint ``importd_sub``."""

    def __init__(self, conn: psycopg.Connection[Any], copy_sql: bytes) -> None:
        self.conn = conn
        self.pg = conn.pgconn
        self.copy_sql = copy_sql
        self.opened = False
        self.failed = False

    def attempt(self, parts: Iterable[bytes | memoryview]) -> tuple[int, Failure | None]:
        """Send ``parts`` as one COPY; (rows, None) or (0, failure) for bad data."""
        if not self.opened:
            prefix = b"SAVEPOINT " + SAVEPOINT + b"; "
        elif self.failed:
            prefix = b"ROLLBACK TO SAVEPOINT " + SAVEPOINT + b"; "
        else:
            prefix = b"RELEASE SAVEPOINT " + SAVEPOINT + b"; SAVEPOINT " + SAVEPOINT + b"; "
        if self.pg.transaction_status == pq.TransactionStatus.IDLE:  # psycopg would have sent BEGIN
            prefix = b"BEGIN; " + prefix
        self.opened = True
        self.failed = False
        self.pg.send_query(prefix + self.copy_sql)
        self._flush()
        failure: Failure | None = None
        while True:
            res = self._result()
            if res is None:
                raise psycopg.OperationalError("connection lost before COPY started")
            if res.status == pq.ExecStatus.COPY_IN:
                break
            if res.status == pq.ExecStatus.FATAL_ERROR:
                failure = Failure.from_result(res)
        if failure is not None:  # a savepoint statement failed: not the data
            raise failure.error()
        for part in parts:
            self._put(part)
        while self.pg.put_copy_end() == 0:
            self._wait(write=True)
        self._flush()
        rows = 0
        while (res := self._result()) is not None:
            if res.status == pq.ExecStatus.FATAL_ERROR:
                failure = Failure.from_result(res)
            elif res.status == pq.ExecStatus.COMMAND_OK:
                rows = res.command_tuples or 0
        if self.pg.status == pq.ConnStatus.BAD:
            raise psycopg.OperationalError("connection lost during COPY")
        if failure is not None:
            self.failed = True
            return 0, failure
        return rows, None

    def close(self) -> None:
        """Leave the savepoint (undoing a last failed attempt)."""
        if not self.opened:
            return
        undo = "ROLLBACK TO SAVEPOINT importd_sub; " if self.failed else ""
        self.conn.execute(undo + "RELEASE SAVEPOINT importd_sub")  # type: ignore[arg-type]
        self.opened = self.failed = False

    # -- libpq plumbing ------------------------------------------------------------------

    def _wait(self, write: bool = False) -> None:
        fd = self.pg.socket
        select.select([] if write else [fd], [fd] if write else [], [], POLL_S)

    def _flush(self) -> None:
        while self.pg.flush() != 0:
            self._wait(write=True)

    def _put(self, data: bytes | memoryview) -> None:
        while self.pg.put_copy_data(data) == 0:
            self._wait(write=True)
            self._flush()

    def _result(self) -> pq.abc.PGresult | None:
        for _ in range(SPIN):  # most answers come within microseconds: a sleep costs more
            self.pg.consume_input()
            if not self.pg.is_busy():
                return self.pg.get_result()
        while True:
            self.pg.consume_input()
            if not self.pg.is_busy():
                return self.pg.get_result()
            if self.pg.status == pq.ConnStatus.BAD:
                raise psycopg.OperationalError("connection lost")
            self._wait()


@dataclass
class Salvaged:
    rows: int
    bad: list[tuple[int, int, Failure]]  # (start, end, failure) of each bad record in the batch


def is_data_state(sqlstate: str | None) -> bool:
    """True for SQLSTATEs that mean "this data is bad", not "the database is in trouble"."""
    state = sqlstate or ""
    return state[:2] in DATA_ERROR_CLASSES or state in DATA_ERROR_CODES


def salvage(raw: RawCopy, data: bytes, chunk: int = START_CHUNK, min_chunk: int = MIN_CHUNK,
            eol: bytes = NL) -> tuple[Salvaged, int]:
    """Load the good records of ``data`` (whole records); return them and the next chunk size.

    ``min_chunk`` 1 lets the chunk shrink to one record (for records that are mostly bad);
    ``eol`` is the file's line end.

    Raises the failure when a data error names no line (the caller then goes record by
    record) and any error that is not about the data.
    """
    view = memoryview(data)
    size = len(data)
    brk = scan.line_break(eol)
    out = Salvaged(0, [])
    pending: list[tuple[int, int]] = []  # accepted by PostgreSQL in a failed attempt, not loaded yet
    pos = 0
    ok = False
    try:
        while pos < size or pending:
            ranges = list(pending)
            fresh: tuple[int, int] | None = None
            if pos < size and sum(e - s for s, e in pending) <= MAX_PREFIX:
                end = size if pos + chunk >= size else scan.last_record_end(data, pos, pos + chunk, brk)
                if end <= pos:
                    end = scan.first_record_end(data, pos, brk=brk)
                fresh = (pos, end)
                ranges.append(fresh)
            rows, failure = raw.attempt([view[s:e] for s, e in ranges])
            if failure is None:
                out.rows += rows
                pending = []
                pos = fresh[1] if fresh else pos
                chunk = min(MAX_CHUNK, chunk * 2)
                continue
            if not is_data_state(failure.sqlstate):
                raise failure.error()
            located = _locate(data, ranges, failure.context, eol)
            if located is None:
                raise failure.error()
            start, stop = located
            out.bad.append((start, stop, failure))
            chunk = max(min_chunk, chunk // 2)
            if fresh and start >= fresh[0]:  # the records before it passed; the rest is cut again
                pending = pending + ([(fresh[0], start)] if start > fresh[0] else [])
                pos = stop
            else:  # unusual: a carried record failed now; retry everything else
                pending = [(s, e) for a, b in ranges for s, e in ((a, min(b, start)), (max(a, stop), b)) if e > s]
                pos = fresh[1] if fresh else pos
        ok = True
    finally:
        if ok or raw.pg.status == pq.ConnStatus.OK:
            raw.close()
    return out, chunk


def _locate(data: bytes, ranges: list[tuple[int, int]], context: str, eol: bytes) -> tuple[int, int] | None:
    """(start, end) in ``data`` of the record the error context's ``line N`` designates."""
    match = CONTEXT_LINE.search(context)
    return locate(data, ranges, int(match.group(1)), eol) if match else None


def locate(data: bytes, ranges: list[tuple[int, int]], line: int, eol: bytes = NL) -> tuple[int, int] | None:
    """(start, end) of the record PostgreSQL numbers ``line`` in a COPY of ``ranges`` of ``data``.

    PostgreSQL counts one line per record plus the line breaks inside quoted fields, but
    only one byte of them: ``\\n`` in LF files, ``\\r`` in CRLF and bare-CR files (``eol``,
    the file's line end), and inside the first record, whose style is not known yet, only
    ``\\r``. So the number is the count of that byte up to the record's end, corrected for
    the first record. Found with a binary search over ``bytes.count``: C speed, no per-line
    loop.
    """
    if not ranges:
        return None
    cut = scan.line_break(eol)
    brk = NL if eol == NL else CR
    first_start = ranges[0][0]
    first_end = scan.first_record_end(data, first_start, ranges[0][1], cut)
    body_end = first_end - len(eol) if data[first_end - len(eol):first_end] == eol else first_end
    target = line + data.count(brk, first_start, body_end) - data.count(CR, first_start, body_end)
    for start, end in ranges:
        here = data.count(brk, start, end)
        if target > here:
            target -= here
            continue
        low, high = start, end  # smallest p with count(brk, start, p) >= target
        while low < high:
            mid = (low + high) // 2
            if data.count(brk, start, mid + 1) >= target:
                high = mid
            else:
                low = mid + 1
        nl = data.find(cut, low, end)
        stop = end if nl < 0 else nl + 1
        record_start = scan.last_record_end(data, start, stop - 1, cut)
        return (record_start if record_start >= 0 else start), stop
    last = ranges[-1]  # past every break: the last record, unterminated
    record_start = scan.last_record_end(data, last[0], last[1] - 1, cut)
    return (record_start if record_start >= 0 else last[0]), last[1]
