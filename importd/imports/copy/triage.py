"""Suspect records judged field by field in one cast query, before any of them goes to COPY.

A record with a field its type refuses is rejected for its first failing column with
PostgreSQL's own message, without a failed COPY; what a cast cannot judge goes on to the
salvage. Which types are cast and why: docs/importing.md, "Speed".

What PostgreSQL said once is kept for the rest of the load (:class:`Memo`): the verdict on a
value of a type (files repeat their bad values: ``N/A``, ``-``, an impossible date), and the
failure of a ragged record by its number of fields (``missing data for column "x"``, ``extra
data after last expected column``), learned from the first such record's failed COPY. Then
no cast query and no COPY is sent for them again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from importd.imports.copy import cells, scan, screen
from importd.imports.copy.salvage import Failure

FUNCTION, CHECK = cells.FUNCTION, cells.CHECK
split = cells.split


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type, e.g. "numeric(14,2)"
    field: re.Pattern[bytes]  # a CSV field the screen vouches for
    castable: bool  # a screened type (not text-like): a failing value can be cast to learn why


def columns(names: Sequence[str], types: Sequence[tuple[str, bool]], delimiter: bytes) -> list[Column] | None:
    """The columns of a screened table (None if a type has no pattern)."""
    out = []
    for name, (pg_type, not_null) in zip(names, types, strict=True):
        pattern = screen.field_pattern(pg_type, not_null, delimiter)
        if pattern is None:
            return None
        out.append(Column(name, pg_type, re.compile(pattern), screen.value_pattern(pg_type) is not None))
    return out


#: Verdicts a :class:`Memo` keeps at most (then it starts again: a bound on memory).
MAX_VERDICTS = 50_000


@dataclass
class Memo:
    """What one load learned from PostgreSQL (a session's input functions and COPY answer the
    same for the same input, whatever the row): the verdict on each (type, value) cast, None
    when the type accepts it; the failure of a ragged record whose fields all convert, by its
    field count (any count past the columns is one key: the failure names no field)."""

    verdicts: dict[tuple[str, str], Failure | None] = field(default_factory=dict)
    ragged: dict[int, Failure] = field(default_factory=dict)

    def learn(self, fields: int, failure: Failure) -> None:
        """Keep a ragged record's failure (only COPY's own one, 22P04 bad copy file format)."""
        if failure.sqlstate == RAGGED_STATE:
            self.ragged[fields] = Failure(failure.sqlstate, failure.message_primary, "", failure.column_name)


#: SQLSTATE of COPY's "missing data for column" and "extra data after last expected column".
RAGGED_STATE = "22P04"


@dataclass
class Judged:
    """The triage of a batch's suspects."""

    bad: list[tuple[int, int, Failure]]  # (start, end, failure): rejected without a COPY
    rest: list[tuple[int, int]]  # for the salvage
    #: start of a ragged record in ``rest`` -> its field-count key: its failed COPY teaches the
    #: :class:`Memo` the failure of every later record of that key.
    teaches: dict[int, int] = field(default_factory=dict)

    def teachers(self, memo: Memo) -> list[tuple[int, int]]:
        """The first record of each ragged kind ``memo`` does not know yet and that more than
        one record of ``rest`` has: learning from it settles the others without a COPY each."""
        first: dict[int, tuple[int, int]] = {}
        shared: set[int] = set()
        for start, stop in self.rest:
            key = self.teaches.get(start)
            if key is None or key in memo.ragged:
                continue
            if key in first:
                shared.add(key)
            else:
                first[key] = (start, stop)
        return [record for key, record in first.items() if key in shared]


@dataclass
class _Check:
    record: int
    column: int
    value: str
    type: str


@dataclass
class _Record:
    """The casts that judge one suspect record, and its field-count key if it is ragged."""

    checks: list[_Check]
    ragged: int | None


def triage(conn: psycopg.Connection[Any], cols: list[Column], data: bytes, suspects: list[tuple[int, int]],
           delimiter: bytes, memo: Memo | None = None) -> Judged:
    """Split ``suspects`` ((start, end) of records in ``data``) into the rejected ones, with
    the failure COPY would give, and the rest (still suspects, for the salvage)."""
    memo = memo if memo is not None else Memo()
    records: list[_Record | None] = [_judge(cols, scan.strip_eol(data[start:stop]), delimiter, index)
                                     for index, (start, stop) in enumerate(suspects)]
    checks = [c for r in records if r is not None for c in r.checks]
    if not _decide(conn, checks, memo):
        return Judged([], suspects)
    out = Judged([], [])
    for (start, stop), record in zip(suspects, records, strict=True):
        failure = _failure(cols, record, memo)
        if failure is not None:
            out.bad.append((start, stop, failure))
            continue
        out.rest.append((start, stop))
        if record is not None and record.ragged is not None:
            out.teaches[start] = record.ragged
    return out


def _failure(cols: list[Column], record: _Record | None, memo: Memo) -> Failure | None:
    """COPY's failure for a judged record: its first failing column (COPY converts in column
    order), else, if it is ragged, what COPY said of its field count; None if not known."""
    if record is None:
        return None
    for check in record.checks:  # in column order
        verdict = memo.verdicts.get((check.type, check.value))
        if verdict is not None:
            return Failure(verdict.sqlstate, verdict.message_primary, "", cols[check.column].name)
    if record.ragged is not None:
        return memo.ragged.get(record.ragged)
    return None


def _decide(conn: psycopg.Connection[Any], checks: list[_Check], memo: Memo) -> bool:
    """Put the verdict of every check in ``memo``, casting only values not judged before (one
    query); False if the query failed."""
    todo = list({(c.type, c.value): c for c in checks if (c.type, c.value) not in memo.verdicts}.values())
    if not todo:
        return True
    errors = _cast(conn, todo)
    if errors is None:
        return False
    if len(memo.verdicts) + len(todo) > MAX_VERDICTS:
        memo.verdicts.clear()
    failed = {number - 1: Failure(state, message, "", None) for number, state, message in errors}
    for number, check in enumerate(todo):
        memo.verdicts[(check.type, check.value)] = failed.get(number)
    return True


def _judge(cols: list[Column], body: bytes, delimiter: bytes, record: int) -> _Record | None:
    """The casts that judge one record, or None if nothing here can (see the module docstring).

    A record with more fields than columns fails before any conversion ("extra data"); one
    with fewer fails at its first missing column once the fields it has convert ("missing
    data"), so those are cast like a whole record's. A NUL byte fails the record before its
    fields are read (invalid byte sequence): left to the salvage.
    """
    fields = split(body, delimiter)
    if fields is None or b"\x00" in body:
        return None
    if len(fields) > len(cols):
        return _Record([], len(cols) + 1)
    out = []
    for index, (raw, col) in enumerate(zip(fields, cols, strict=False)):
        if col.field.fullmatch(raw):
            continue
        if not col.castable or not raw:
            return None
        value = raw[1:-1].replace(b'""', b'"') if raw.startswith(b'"') else raw
        out.append(_Check(record, index, value.decode("utf-8"), col.type))
    ragged = len(fields) if len(fields) < len(cols) else None
    return _Record(out, ragged) if out or ragged is not None else None


def _cast(conn: psycopg.Connection[Any], checks: list[_Check]) -> list[tuple[int, str, str]] | None:
    """(check number, SQLSTATE, message) of each failing cast; None if the query failed."""
    return cells.cast_errors(conn, [c.value for c in checks], [c.type for c in checks])
