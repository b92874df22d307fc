"""The fields of one raw CSV record and PostgreSQL's own verdict on a value of a type.

Shared by the triage (which judges suspect records during a load) and the preview (which
judges the first records of a file before anything is queued), so both apply one set of
rules: PostgreSQL's input functions, reached by casting a literal to the column's type.
Nothing here sends COPY or knows the job; the API may import it (see ``.importlinter``).
"""

from __future__ import annotations

from typing import Any

import psycopg

from importd.imports.copy import pgerrors

#: A temporary function (it goes with the session): each value cast to its type, errors back.
#: A domain's CHECK raises an integrity error rather than a data error: both are the value's fault.
FUNCTION = """
CREATE OR REPLACE FUNCTION pg_temp.importd_input_errors(vals text[], types text[])
RETURNS TABLE (k integer, state text, message text) LANGUAGE plpgsql AS $fn$
BEGIN
    FOR n IN 1 .. coalesce(array_length(vals, 1), 0) LOOP
        BEGIN
            EXECUTE format('SELECT %L::%s', vals[n], types[n]);
        EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN
            k := n; state := SQLSTATE; message := SQLERRM;
            RETURN NEXT;
        END;
    END LOOP;
END $fn$"""
CHECK = "SELECT k, state, message FROM pg_temp.importd_input_errors(%s::text[], %s::text[])"
#: SQLSTATE classes that are not about the query (connection, rollback, resources, operator, system).


def split(body: bytes, delimiter: bytes) -> list[bytes] | None:
    """The raw fields of one CSV record (quotes kept); None for a quote inside an unquoted
    field or text after a closing quote, which PostgreSQL reads its own way."""
    if b'"' not in body:  # most records: one split in C
        return body.split(delimiter)
    fields: list[bytes] = []
    pos, size = 0, len(body)
    while True:
        if body.startswith(b'"', pos):
            end = pos + 1
            while True:
                end = body.find(b'"', end)
                if end < 0:
                    return None
                if body.startswith(b'""', end):
                    end += 2
                    continue
                break
            end += 1
            if end < size and body[end:end + 1] != delimiter:
                return None
        else:
            found = body.find(delimiter, pos)
            end = size if found < 0 else found
            if b'"' in body[pos:end]:
                return None
        fields.append(body[pos:end])
        if end >= size:
            return fields
        pos = end + 1


#: PostgreSQL's error for a record that ends inside a quoted field.
UNTERMINATED = "unterminated CSV quoted field"


def pg_fields(body: bytes, delimiter: bytes) -> list[tuple[bytes, bool]] | None:
    """(value, saw a quote) of each field of one CSV record exactly as PostgreSQL's COPY reads
    it (``CopyReadAttributesCSV``), for the records :func:`split` leaves to it: a quote in the
    middle of a field opens a quoted part there, text after a closing quote belongs to the
    field, ``""`` inside quotes is one quote. A field is NULL only when it is empty and saw no
    quote. None when the record ends inside quotes (COPY's :data:`UNTERMINATED`)."""
    fields: list[tuple[bytes, bool]] = []
    value, saw_quote, quoted = bytearray(), False, False
    pos, size, quote, delim = 0, len(body), 0x22, delimiter[0]
    while pos < size:
        c = body[pos]
        pos += 1
        if quoted:
            if c == quote and pos < size and body[pos] == quote:
                value.append(quote)
                pos += 1
            elif c == quote:
                quoted = False
            else:
                value.append(c)
        elif c == delim:
            fields.append((bytes(value), saw_quote))
            value, saw_quote = bytearray(), False
        elif c == quote:
            quoted = saw_quote = True
        else:
            value.append(c)
    if quoted:
        return None
    fields.append((bytes(value), saw_quote))
    return fields


def unquote(raw: bytes) -> bytes:
    """The value of a raw field: a quoted field without its quotes and with ``""`` undoubled."""
    return raw[1:-1].replace(b'""', b'"') if raw.startswith(b'"') else raw


def cast_errors(conn: psycopg.Connection[Any], values: list[str],
                types: list[str]) -> list[tuple[int, str, str]] | None:
    """(1-based index, SQLSTATE, message) of each value its type refuses; None if the query
    failed for another reason. Runs in a savepoint: ``conn`` must be in a transaction."""
    try:
        conn.execute("SAVEPOINT importd_triage; " + FUNCTION)
        rows = conn.execute(CHECK, (values, types)).fetchall()  # type: ignore[arg-type]
        conn.execute("RELEASE SAVEPOINT importd_triage")
    except psycopg.Error as exc:
        if pgerrors.is_transient(exc):  # the database is in trouble, not the query: the run decides
            raise
        conn.execute("ROLLBACK TO SAVEPOINT importd_triage; RELEASE SAVEPOINT importd_triage")
        return None
    return [(int(k), str(state), str(message)) for k, state, message in rows]
