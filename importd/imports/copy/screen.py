"""Telling the rows PostgreSQL will surely accept from the rest, at C speed, in dirty batches.

One regular expression per table, built from the column types, matches only input every
PostgreSQL accepts for them; the others (suspects) go to the triage and salvage. The patterns
err only towards suspicion. Why and what is left out: docs/importing.md, "Speed".

The runs of good records are matched by RE2 (google-re2: a DFA, one pass over the bytes,
2-4 x less CPU than Python's backtracking ``re``, which cost 2.5 us a row); Python's
``re`` is kept for a pattern RE2 cannot take. Both read one grammar (a CSV field starts with
a quote or is unquoted, so a record parses one way only), written once in
:func:`field_pattern`: possessive and atomic in ``re`` syntax, plain in RE2's.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from typing import Any

from importd.imports.copy import scan

try:
    import re2  # type: ignore[import-not-found, unused-ignore]

    # google-re2's compiled class, ``re2._re2.RE2``, is private (read, never patched; checked
    # with google-re2 1.1.20251105, listed in docs/operations.md "Third-party internals"). The
    # public ``re2.compile`` keeps up to 128 compiled programs per process in its own
    # lru_cache, each with a DFA of up to RE2_MAX_MEM, where this module bounds its screens
    # to 8 (``_compiled``); and its ``match`` wraps every call in a Match object (+0.6 us a
    # call). A release without the class falls back to ``re`` here, and tests/integration/
    # test_screen.py, which asserts the engine is RE2, fails.
    _RE2: Any = re2._re2.RE2
except (ImportError, AttributeError):  # pragma: no cover - a dependency; Python's re is the fallback
    re2 = None
    _RE2 = None

#: Share of a batch's bytes found suspect past which the job stops screening (the column
#: formats are ones the patterns do not know, e.g. US dates, and screening only costs time).
MAX_SUSPECT_SHARE = 0.5
#: Bytes screened between two writes to COPY (PostgreSQL parses one while Python screens the next).
WINDOW = 256 * 1024
#: RE2's largest repeat count; a longer bound (``varchar(5000)``) is cut to it in RE2's
#: pattern, which only makes a longer value a suspect.
RE2_MAX_REPEAT = 1000
#: Memory one compiled screen may use in RE2 (program and DFA cache; the DFA slows down, it
#: does not fail, when its cache is full).
RE2_MAX_MEM = 32 * 1024 * 1024

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


def field_pattern(pg_type: str, not_null: bool, delimiter: bytes, possessive: bool = True) -> bytes | None:
    """A CSV field of ``pg_type``: quoted or not; an unquoted empty field is NULL.

    ``possessive``: Python ``re`` syntax (quantifiers that never give back, so a failing
    record costs no backtracking); False for RE2, which has no backtracking to stop.
    """
    own = b"+" if possessive else b""
    plain = rb'[^' + re.escape(delimiter) + rb'"\r\n\x00]'
    chars = _CHARS.fullmatch(pg_type)
    if pg_type in _TEXT or chars:  # a length limit counts bytes here: at least the characters
        limit = int(chars.group(1)) if chars else None
        if limit is not None and not possessive:
            limit = min(limit, RE2_MAX_REPEAT)
        many = (rb"{0,%d}" % limit if limit is not None else b"*") + own
        some = (rb"{1,%d}" % limit if limit is not None else b"+") + own
        return rb'(?:"(?:[^"\x00]|"")' + many + rb'"|' + plain + (some if not_null else many) + rb")"
    value = value_pattern(pg_type)
    if value is None:
        return None
    return rb'(?:' + value + rb'|"' + value + rb'"' + (b"" if not_null else b"|") + b")"


class Rows:
    """A compiled screen: where the run of good records starting at an offset ends."""

    def __init__(self, sre: re.Pattern[bytes], fast: Any = None) -> None:
        self.sre = sre
        self.fast = fast  # RE2's compiled pattern, when RE2 takes it

    @property
    def engine(self) -> str:
        return "re2" if self.fast is not None else "re"

    def run_end(self, data: bytes, view: memoryview, pos: int, stop: int) -> int:
        """End of the longest run of good records of ``data[pos:stop]`` (``stop``: a record
        end or the end of ``data``; ``view``: a memoryview of ``data``)."""
        if self.fast is not None:
            # A slice of the view: RE2's \z matches at the end of the text it is given only.
            return pos + int(self.fast.Match(_ANCHOR_START, view[pos:stop], 0, stop - pos)[0][1])
        return self.sre.match(data, pos, stop).end()  # type: ignore[union-attr]  # `*+` always matches


_ANCHOR_START = _RE2.Anchor.ANCHOR_START if _RE2 is not None else None


def compile_rows(types: Sequence[tuple[str, bool]], delimiter: str, eol: bytes) -> Rows | None:
    """A screen matching a run of good records whose fields have ``types`` ((type, not null)
    in file order) and end with ``eol`` (the file's LF, CRLF or CR); None if a type has no
    pattern or the delimiter cannot be screened. Compiled once per table shape and process
    (the streams of a resumable import and consecutive jobs share it; RE2 is thread-safe)."""
    return _compiled(tuple(types), delimiter, eol)


@functools.lru_cache(maxsize=8)
def _compiled(types: tuple[tuple[str, bool], ...], delimiter: str, eol: bytes) -> Rows | None:
    sre = _row_pattern(types, delimiter, eol, possessive=True)
    if sre is None:
        return None
    return Rows(re.compile(sre), _re2_compile(_row_pattern(types, delimiter, eol, possessive=False)))


def _row_pattern(types: Sequence[tuple[str, bool]], delimiter: str, eol: bytes, possessive: bool) -> bytes | None:
    delim = delimiter.encode()
    if len(delim) != 1 or delim in b'"\r\n\x00':
        return None
    fields = [field_pattern(t, not_null, delim, possessive) for t, not_null in types]
    if not fields or any(f is None for f in fields):
        return None
    end = rb"(?:" + re.escape(eol) + (rb"|\Z)" if possessive else rb"|\z)")
    row = (rb"(?>" if possessive else rb"(?:") + re.escape(delim).join(f for f in fields if f is not None) + rb")" + end
    return rb"(?:" + row + rb")*" + (b"+" if possessive else b"")


def _re2_compile(pattern: bytes | None) -> Any:
    """RE2's compiled ``pattern`` over bytes (Latin-1: one byte one character, as ``re`` reads
    bytes, and case folding of ASCII letters only), or None if RE2 cannot take it."""
    if _RE2 is None or pattern is None:
        return None
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    options.max_mem = RE2_MAX_MEM
    options.log_errors = False
    compiled = _RE2(pattern, options)
    return compiled if compiled.ok() else None


def split(rows: Rows, data: bytes, suspects: list[tuple[int, int]], brk: bytes = b"\n"
          ) -> Iterator[bytes | memoryview]:
    """Yield the good records of ``data`` (whole records, ending at ``brk``) one window at a
    time, in one piece per window (one write to COPY, not one per run between suspects); add
    each other record's (start, end) to ``suspects``."""
    view = memoryview(data)
    size = len(data)
    pos = 0
    while pos < size:
        # the window ends at a record end (quote parity, C speed)
        window = size if pos + WINDOW >= size else scan.last_record_end(data, pos, pos + WINDOW, brk)
        if window <= pos:
            window = scan.first_record_end(data, pos, brk=brk)
        runs: list[memoryview] = []
        while pos < window:
            end = rows.run_end(data, view, pos, window)
            if end > pos:
                runs.append(view[pos:end])
            if end < window:
                stop = scan.first_record_end(data, end, brk=brk)
                suspects.append((end, stop))
                end = stop
            pos = end
        if len(runs) > 1:
            yield b"".join(runs)
        elif runs:
            yield runs[0]
