"""Telling the rows PostgreSQL will surely accept from the rest, at C speed, in dirty batches.

One regular expression per table, built from the column types, matches only input every
PostgreSQL accepts for them; the others (suspects) go to the triage and salvage. The patterns
err only towards suspicion. Why and what is left out: docs/importing.md, "Speed".
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from importd.imports.copy import scan

#: Share of a batch's bytes found suspect past which the job stops screening (the column
#: formats are ones the patterns do not know, e.g. US dates, and screening only costs time).
MAX_SUSPECT_SHARE = 0.5
#: Bytes screened between two writes to COPY (PostgreSQL parses one while Python screens the next).
WINDOW = 256 * 1024

_DATE = rb"[1-9]\d{3}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])"
_TIME = rb"(?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,6})?)?"
_ZONE = rb"(?:Z|[+-](?:0\d|1[0-4])(?::?[0-5]\d)?)"
_TIMESTAMP = _DATE + rb"(?:[ T]" + _TIME + _ZONE + rb"?)?"
_HEX = rb"[0-9a-fA-F]"

#: Value patterns of the types screening knows (format_type names); each matches only input
#: that PostgreSQL's input function for the type accepts, whatever the session settings.
TYPE_PATTERNS: dict[str, bytes] = {
    "smallint": rb"[+-]?\d{1,4}",
    "integer": rb"[+-]?\d{1,9}",
    "bigint": rb"[+-]?\d{1,18}",
    "numeric": rb"[+-]?\d{1,100}(?:\.\d{0,100})?",
    "real": rb"[+-]?\d{1,15}(?:\.\d{0,15})?",
    "double precision": rb"[+-]?\d{1,15}(?:\.\d{0,15})?",
    "boolean": rb"(?i:t(?:rue)?|f(?:alse)?|y(?:es)?|no?|o(?:n|ff)|[01])",
    "uuid": _HEX + rb"{8}-" + _HEX + rb"{4}-" + _HEX + rb"{4}-" + _HEX + rb"{4}-" + _HEX + rb"{12}",
    "date": _DATE,
    "timestamp without time zone": _TIMESTAMP,
    "timestamp with time zone": _TIMESTAMP,
}
_NUMERIC = re.compile(r"numeric\((\d+),(\d+)\)")
_TIMESTAMP_P = re.compile(r"timestamp\(\d\) (with|without) time zone")
_CHARS = re.compile(r"(?:character varying|character)\((\d+)\)")
_TEXT = ("text", "character varying")


def value_pattern(pg_type: str) -> bytes | None:
    """The pattern of a value of ``pg_type``; None for text-like types and unknown ones."""
    if pg_type in TYPE_PATTERNS:
        return TYPE_PATTERNS[pg_type]
    if m := _NUMERIC.fullmatch(pg_type):
        precision, scale = int(m.group(1)), int(m.group(2))
        if precision <= scale:
            return None
        return rb"[+-]?\d{1,%d}" % (precision - scale) + (rb"(?:\.\d{0,%d})?" % scale if scale else b"")
    if m := _TIMESTAMP_P.fullmatch(pg_type):
        return TYPE_PATTERNS[f"timestamp {m.group(1)} time zone"]
    return None


def field_pattern(pg_type: str, not_null: bool, delimiter: bytes) -> bytes | None:
    """A CSV field of ``pg_type``: quoted or not; an unquoted empty field is NULL."""
    plain = rb'[^' + re.escape(delimiter) + rb'"\r\n\x00]'
    chars = _CHARS.fullmatch(pg_type)
    if pg_type in _TEXT or chars:  # a length limit counts bytes here: at least the characters
        many = rb"{0,%d}+" % int(chars.group(1)) if chars else b"*+"
        some = rb"{1,%d}+" % int(chars.group(1)) if chars else b"++"
        return rb'(?:"(?:[^"\x00]|"")' + many + rb'"|' + plain + (some if not_null else many) + rb")"
    value = value_pattern(pg_type)
    if value is None:
        return None
    return rb'(?:' + value + rb'|"' + value + rb'"' + (b"" if not_null else b"|") + b")"


def compile_rows(types: Sequence[tuple[str, bool]], delimiter: str, eol: bytes) -> re.Pattern[bytes] | None:
    """A pattern matching a run of good records whose fields have ``types`` ((type, not null)
    in file order) and end with ``eol`` (the file's LF, CRLF or CR); None if a type has no
    pattern or the delimiter cannot be screened."""
    delim = delimiter.encode()
    if len(delim) != 1 or delim in b'"\r\n\x00':
        return None
    fields = [field_pattern(t, not_null, delim) for t, not_null in types]
    if not fields or any(f is None for f in fields):
        return None
    end = rb"(?:" + re.escape(eol) + rb"|\Z)"
    row = rb"(?>" + re.escape(delim).join(f for f in fields if f is not None) + rb")" + end
    return re.compile(rb"(?:" + row + rb")*+")


def split(rows: re.Pattern[bytes], data: bytes, suspects: list[tuple[int, int]], brk: bytes = b"\n"
          ) -> Iterator[memoryview]:
    """Yield the runs of good records of ``data`` (whole records, ending at ``brk``) one
    window at a time; add each other record's (start, end) to ``suspects``."""
    view = memoryview(data)
    size = len(data)
    pos = run = window = 0
    while pos < size:
        if pos >= window:  # the next window ends at a record end (quote parity, C speed)
            window = size if pos + WINDOW >= size else scan.last_record_end(data, pos, pos + WINDOW, brk)
            if window <= pos:
                window = scan.first_record_end(data, pos, brk=brk)
        end = rows.match(data, pos, window).end()  # type: ignore[union-attr]  # `*+` always matches
        if end < window:
            stop = scan.first_record_end(data, end, brk=brk)
            if end > run:
                yield view[run:end]
            suspects.append((end, stop))
            pos = run = stop
            continue
        if end > run:
            yield view[run:end]
        pos = run = end
