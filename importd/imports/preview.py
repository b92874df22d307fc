"""A file's first records as the import will see them, before anything is queued.

Reads at most :data:`HEAD_BYTES` of the file (whatever its size), detects the delimiter (as
the import does, from the header) and the encoding (UTF-8 if the head decodes as UTF-8, else
Windows-1252, unless the caller names one), maps the header to the table's columns
(:mod:`importd.imports.mappings`) and judges every cell of the first records by the import's
own rules: an unquoted empty field is NULL (refused by a NOT NULL column), a quoted empty
field is an empty string, a field count other than the header's is refused, and each other
value is cast to its column's type by PostgreSQL (:func:`importd.imports.copy.cells.cast_errors`,
the triage's check), so the message is the one COPY would give. Table constraints (CHECK,
UNIQUE, foreign keys) are not judged here: the dry run does that.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any, BinaryIO

import psycopg

from importd.config import Settings
from importd.imports import mappings, targets
from importd.imports.copy import cells, scan
from importd.imports.copy.spec import Column, Target

#: Bytes of the file a preview reads at most (the header and the first records).
HEAD_BYTES = 1024 * 1024
#: Records shown unless the caller asks for another number; and the most it may ask for.
DEFAULT_ROWS = 50
MAX_ROWS = 500
#: Encoding tried when the head is not valid UTF-8 (the usual spreadsheet export).
FALLBACK_ENCODING = "cp1252"
#: Characters of a cell value the preview sends back.
MAX_CELL_CHARS = 200

_LENGTH = re.compile(r"(?:character varying|character)\((\d+)\)")
_TEXT_TYPES = ("text", "character varying", "character", "name", "citext")


class PreviewError(ValueError):
    """The head cannot be previewed (not CSV, unknown table); ``problems`` says why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class _Cell:
    value: str | None  # None: NULL
    raw_quoted: bool
    error: str | None = None


def read_head(f: BinaryIO, limit: int = HEAD_BYTES) -> tuple[bytes, bool]:
    """The first ``limit`` bytes of ``f`` and whether the file goes on past them.

    Reads ``limit + 1`` bytes at most: the one extra byte only tells whether more follow."""
    head = b""
    while len(head) <= limit:
        chunk = f.read(limit + 1 - len(head))
        if not chunk:
            break
        head += chunk
    return head[:limit], len(head) > limit


def detect_encoding(head: bytes, more: bool, requested: str | None) -> tuple[scan.Encoding, str, bool]:
    """(encoding, its name for the job's ``encoding`` option, detected?)."""
    if requested:
        return scan.encoding(requested), requested, False
    sample = head
    if more:  # the head may end inside a multi-byte character: judge whole lines only
        cut = sample.rfind(b"\n")
        sample = sample[:cut + 1] if cut >= 0 else sample[:-3]
    try:
        sample.decode("utf-8")
        return scan.encoding("utf-8"), "utf-8", True
    except UnicodeDecodeError:
        return scan.encoding(FALLBACK_ENCODING), FALLBACK_ENCODING, True


def records(head: bytes, start: int, more: bool, limit: int, brk: bytes = scan.NL) -> list[tuple[int, bytes]]:
    """(start offset, raw bytes) of up to ``limit`` whole records of ``head`` from ``start``,
    ended by ``brk`` (the file's line break, :func:`importd.imports.copy.scan.line_break`);
    a last record cut by the end of the head is left out."""
    out: list[tuple[int, bytes]] = []
    pos = start
    for end in scan.record_ends(head, start, brk=brk):
        raw = head[pos:end]
        if more and end == len(head) and not raw.endswith(brk):
            break
        out.append((pos, raw))
        pos = end
        if len(out) >= limit:
            break
    return out


def preview_file(conn: psycopg.Connection[Any], settings: Settings, f: BinaryIO, table: str,
                 options: dict[str, Any], rows: int = DEFAULT_ROWS) -> dict[str, Any]:
    """The preview of the file ``f`` (positioned at 0): reads :data:`HEAD_BYTES` of it at most."""
    head, more = read_head(f)
    return preview(conn, settings, head, more, table, options, rows)


def preview(conn: psycopg.Connection[Any], settings: Settings, head: bytes, more: bool, table: str,
            options: dict[str, Any], rows: int = DEFAULT_ROWS) -> dict[str, Any]:
    """The preview of a file whose first bytes are ``head`` (``more``: the file goes on) for
    ``table``; PreviewError if the head is not CSV or the table cannot be used. Without a
    ``columns`` option, the mapping saved for this header and table (if any) is used."""
    enc, enc_name, detected = detect_encoding(head, more, options.get("encoding"))
    try:
        target = targets.load(conn, settings, table)
        header = scan.read_header(io.BytesIO(head), enc, options.get("delimiter"), len(head) or 1)
    except targets.TargetError as exc:
        raise PreviewError(exc.problems) from exc
    except scan.CsvFormatError as exc:
        raise PreviewError([str(exc)]) from exc
    explicit = options.get("columns") or None
    saved = None if explicit else mappings.load(conn, target.name, header.fields)
    source = "request" if explicit else ("saved" if saved else None)
    brk = scan.line_break(header.eol)
    found = records(head, header.data_offset, more, rows, brk)
    delim = header.delimiter.encode()
    mapping = mappings.propose(target, header.fields, explicit or saved, _blank(header.fields, found, delim))
    try:
        targets.map_header(target, header.fields, mapping["columns"])
        problems: list[str] = []
    except targets.TargetError as exc:
        problems = exc.problems
    faults = _eol_faults(head, found, header.eol)
    line = 1 + header.lines
    columns = [target.columns.get(f["column"] or "") for f in mapping["fields"]]
    out_rows: list[dict[str, Any]] = []
    grid: list[list[_Cell]] = []
    for start, raw in found:
        cells_, row_error = _cells(scan.strip_eol(raw), delim, enc, columns)
        out_rows.append({"line": line, "error": faults.get(start) or row_error})
        grid.append(cells_)
        line += raw.count(brk)
    notes = []
    if more and len(found) < rows:  # the head ends inside the next record: say so, not just fewer rows
        notes.append(f"the record at line {line} goes on past the first {len(head)} bytes the preview reads: "
                     "it and the records after it are not shown")
    _judge(conn, grid, columns)  # an ignored field has no column: never judged, its values are dropped
    for row, cells_ in zip(out_rows, grid, strict=True):
        row["cells"] = [{"value": c.value if c.value is None else c.value[:MAX_CELL_CHARS],
                         "quoted": c.raw_quoted, "error": c.error} for c in cells_]
    bad_cells = sum(1 for c in (c for r in grid for c in r) if c.error)
    return {
        "table": target.name, "delimiter": header.delimiter, "encoding": enc_name,
        "encoding_detected": detected, "header": header.fields, "mapping": mapping,
        "mapping_source": source, "problems": problems, "notes": notes, "rows": out_rows,
        "rows_shown": len(out_rows), "bad_rows": sum(1 for r, c in zip(out_rows, grid, strict=True)
                                                     if r["error"] or any(x.error for x in c)),
        "bad_cells": bad_cells, "bytes_read": len(head), "complete": not more,
        "columns": [{"name": c.name, "type": c.type, "not_null": c.not_null, "has_default": c.has_default}
                    for c in target.columns.values()],
    }


def _blank(header: list[str], found: list[tuple[int, bytes]], delim: bytes) -> set[int]:
    """Positions of the header fields with an empty name when none of them has a value in the
    records ``found`` (else none: a mapping names fields by name, so ignoring "" ignores every
    empty-named field, and one of them holds data)."""
    empty = {i for i, name in enumerate(header) if not name.strip()}
    for _, raw in found:
        if not empty:
            break
        fields = cells.split(scan.strip_eol(raw), delim)
        if fields is None or any(i < len(fields) and cells.unquote(fields[i]) != b"" for i in empty):
            return set()
    return empty


def _eol_faults(head: bytes, found: list[tuple[int, bytes]], eol: bytes) -> dict[int, str]:
    """Start offset -> reason of the records holding a line end of another style than the
    file's outside quotes: COPY refuses them (the loader rejects them the same way)."""
    if not found:
        return {}
    begin, end = found[0][0], found[-1][0] + len(found[-1][1])
    return {begin + start: reason for start, _, reason in scan.eol_faults(head[begin:end], eol)}


def _cells(body: bytes, delim: bytes, enc: scan.Encoding,
           columns: list[Column | None]) -> tuple[list[_Cell], str | None]:
    """The cells of one record and a record-level error (field count, quoting), as COPY reads them."""
    row_error = None
    raw_fields = cells.split(body, delim)
    if raw_fields is not None:
        fields = [(cells.unquote(raw), raw.startswith(b'"')) for raw in raw_fields]
    else:  # a quote inside a field, text after a closing quote: read as COPY reads it
        fields = cells.pg_fields(body, delim) or []
        if not fields:
            row_error = cells.UNTERMINATED
    out: list[_Cell] = []
    for value, quoted in fields:
        if not quoted and value == b"":
            out.append(_Cell(None, False))
            continue
        try:
            out.append(_Cell(value.decode(enc.python), quoted))
        except UnicodeDecodeError as exc:
            out.append(_Cell(value.decode(enc.python, errors="replace"), quoted,
                             f'invalid byte sequence for encoding "{enc.pg}": 0x{value[exc.start]:02x}'))
    if row_error is None and len(out) < len(columns):
        missing = columns[len(out)]
        row_error = f'missing data for column "{missing.name if missing else len(out) + 1}"'
    elif row_error is None and len(out) > len(columns):
        row_error = "extra data after last expected column"
    return out, row_error


def _judge(conn: psycopg.Connection[Any], grid: list[list[_Cell]], columns: list[Column | None]) -> None:
    """Set each cell's error: NULL in a NOT NULL column, NUL bytes, text over its length, and
    whatever PostgreSQL's input function for the column's type says of the value."""
    pending: list[tuple[_Cell, Column]] = []
    for row in grid:
        for cell, column in zip(row, columns, strict=False):
            if column is None or cell.error:
                continue
            if cell.value is None:
                if column.not_null:
                    cell.error = f'null value in column "{column.name}" violates not-null constraint'
                continue
            if "\x00" in cell.value:
                cell.error = 'invalid byte sequence for encoding "UTF8": 0x00'
            elif _is_text(column.type):
                length = _LENGTH.fullmatch(column.type)
                # COPY (the input function with the column's length) refuses only excess that is
                # not all spaces, for varchar as for char: a padded fixed-width export loads
                if length and len(cell.value.rstrip(" ")) > int(length.group(1)):
                    cell.error = f"value too long for type {column.type}"
            else:
                pending.append((cell, column))
    if not pending:
        return
    with conn.transaction():
        errors = cells.cast_errors(conn, [c.value or "" for c, _ in pending], [col.type for _, col in pending])
    for number, _state, message in errors or ():
        pending[number - 1][0].error = message


def _is_text(pg_type: str) -> bool:
    return pg_type in _TEXT_TYPES or bool(_LENGTH.fullmatch(pg_type))


def target_of(conn: psycopg.Connection[Any], settings: Settings, table: str) -> Target:
    """The table (allowlisted, from the catalog); PreviewError if it cannot be used."""
    try:
        return targets.load(conn, settings, table)
    except targets.TargetError as exc:
        raise PreviewError(exc.problems) from exc
