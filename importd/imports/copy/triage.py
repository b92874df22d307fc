"""Suspect records judged field by field in one cast query, before any of them goes to COPY.

A record with a field its type refuses is rejected for its first failing column with
PostgreSQL's own message, without a failed COPY; what a cast cannot judge goes on to the
salvage. Which types are cast and why: docs/importing.md, "Speed".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass
class _Check:
    record: int
    column: int
    value: str
    type: str


def triage(conn: psycopg.Connection[Any], cols: list[Column], data: bytes, suspects: list[tuple[int, int]],
           delimiter: bytes) -> tuple[list[tuple[int, int, Failure]], list[tuple[int, int]]]:
    """Split ``suspects`` ((start, end) of records in ``data``) into the rejected ones, with
    the failure COPY would give, and the rest (still suspects, for the salvage)."""
    checks: list[_Check] = []
    for index, (start, stop) in enumerate(suspects):
        checks.extend(_checks(cols, scan.strip_eol(data[start:stop]), delimiter, index) or ())
    if not checks:
        return [], suspects
    errors = _cast(conn, checks)
    if errors is None:
        return [], suspects
    first: dict[int, tuple[int, Failure]] = {}
    for number, state, message in errors:
        check = checks[number - 1]
        if check.record not in first or check.column < first[check.record][0]:
            first[check.record] = (check.column, Failure(state, message, "", cols[check.column].name))
    bad = [(suspects[i][0], suspects[i][1], failure) for i, (_, failure) in sorted(first.items())]
    rest = [s for i, s in enumerate(suspects) if i not in first]
    return bad, rest


def _checks(cols: list[Column], body: bytes, delimiter: bytes, record: int) -> list[_Check] | None:
    """The casts that judge one record, or None if a cast cannot (see the module docstring)."""
    fields = split(body, delimiter)
    if fields is None or len(fields) != len(cols):
        return None
    out = []
    for index, (raw, col) in enumerate(zip(fields, cols, strict=True)):
        if col.field.fullmatch(raw):
            continue
        if not col.castable or not raw or b"\x00" in raw:
            return None
        value = raw[1:-1].replace(b'""', b'"') if raw.startswith(b'"') else raw
        out.append(_Check(record, index, value.decode("utf-8"), col.type))
    return out or None


def _cast(conn: psycopg.Connection[Any], checks: list[_Check]) -> list[tuple[int, str, str]] | None:
    """(check number, SQLSTATE, message) of each failing cast; None if the query failed."""
    return cells.cast_errors(conn, [c.value for c in checks], [c.type for c in checks])
