"""Column mappings the user confirmed: matching a file's header to a table's columns, with
suggestions for near misses, and remembering the answer per (table, header).

The automatic match is the one the import makes (:func:`importd.imports.targets.map_header`:
case and surrounding spaces ignored). A header name it cannot place gets a *suggestion*: the
column whose name is the same once punctuation and spacing are dropped (``E-mail`` ->
``email``, ``Created At`` -> ``created_at``), else the closest name by edit similarity. A
suggestion is never applied on its own: the user confirms it, and the confirmed mapping goes
with the job as its ``columns`` option and is saved here, so the next file with the same
header is mapped at once. A field mapped to None (JSON null) is ignored: read and dropped.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections import Counter
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from importd.imports.copy.spec import Target

#: Similarity (difflib ratio of the squashed names) a suggestion needs when no name squashes equal.
SUGGEST_CUTOFF = 0.75
#: Saved mappings listed per table at most.
MAX_LISTED = 200

_SQUASH = re.compile(r"[^0-9a-z]+")


def squash(name: str) -> str:
    """A name without case, spacing and punctuation: ``"E-mail "`` and ``email`` meet."""
    return _SQUASH.sub("", name.strip().lower())


def header_key(header: list[str]) -> str:
    """The key a header is saved under: its fields in order, case and surrounding spaces ignored
    (the same equivalence as the automatic match)."""
    text = json.dumps([h.strip().lower() for h in header])
    return hashlib.sha256(text.encode()).hexdigest()


def auto_column(target: Target, name: str) -> str | None:
    """The column the import would pick for header ``name`` without a mapping."""
    name = name.strip()
    if name in target.columns:
        return name
    found = [c for c in target.columns if c.lower() == name.lower()]
    return found[0] if len(found) == 1 else None


def suggest(target: Target, name: str, taken: set[str]) -> str | None:
    """A column for a header name nothing matched: equal once squashed, else the closest."""
    free = [c for c in target.columns if c not in taken and not target.columns[c].generated]
    wanted = squash(name)
    if not wanted:
        return None
    same = [c for c in free if squash(c) == wanted]
    if len(same) == 1:
        return same[0]
    by_squash = {squash(c): c for c in free}
    close = difflib.get_close_matches(wanted, list(by_squash), n=1, cutoff=SUGGEST_CUTOFF)
    return by_squash[close[0]] if close else None


def propose(target: Target, header: list[str], explicit: dict[str, str | None] | None,
            blank: set[int] | None = None) -> dict[str, Any]:
    """The mapping to show: per header field the column it goes to and why (``explicit``,
    ``auto``, ``suggested`` or ``none``) and whether it is ``ignored`` (mapped to null: read
    and dropped), the table columns the file lacks (``required`` when NOT NULL without a
    default) and the effective ``columns`` option (explicit and suggested entries, null for
    an ignored field, to send with the job once the user agrees). ``blank``: positions of
    fields with an empty name and no value in the records seen (a spreadsheet's trailing
    delimiter): ignoring them is suggested, never applied without the user."""
    wanted = {k.strip().lower(): v for k, v in (explicit or {}).items()}
    fields: list[dict[str, Any]] = []
    taken: set[str] = set()
    for name in header:
        column, how, ignored = None, "none", False
        if name.strip().lower() in wanted:
            choice = wanted[name.strip().lower()]
            how, ignored = "explicit", choice is None
            column = auto_column(target, choice) if choice else None
        else:
            column = auto_column(target, name)
            how = "auto" if column else "none"
        if column:
            taken.add(column)
        fields.append({"header": name, "column": column, "how": how, "ignored": ignored})
    for position, field in enumerate(fields):
        if field["how"] == "none":
            hint = suggest(target, field["header"], taken)
            if hint:
                field.update(column=hint, how="suggested")
                taken.add(hint)
            elif position in (blank or ()) and not field["header"].strip():
                field.update(how="suggested", ignored=True)
    missing = [{"column": c.name, "type": c.type, "required": c.required}
               for c in target.columns.values() if c.name not in taken and not c.generated]
    columns = {f["header"]: None if f["ignored"] else f["column"] for f in fields
               if f["how"] in ("explicit", "suggested") and (f["column"] or f["ignored"])}
    return {"fields": fields, "missing": missing, "columns": columns}


def check(target: Target, header: list[str], columns: dict[str, str | None]) -> list[str]:
    """What makes ``columns`` (header name -> table column, ``""`` for none, None to ignore
    the field) unfit to save for
    ``header`` into ``target``: a name the header lacks or named twice (case and surrounding
    spaces ignored, as the import compares them), a column the table lacks or generates, a
    column two header fields would go to (explicitly or by the automatic match). The import
    would refuse each of them; saved, the next file with this header would be mapped wrong."""
    problems: list[str] = []
    known = {h.strip().lower() for h in header}
    keys = Counter(k.strip().lower() for k in columns)
    strays = [k for k in columns if k.strip().lower() not in known]
    if strays:
        problems.append(f"columns names header fields the header lacks: {_names(strays)}")
    twice = [k for k, n in keys.items() if n > 1]
    if twice:
        problems.append(f"columns names a header field more than once (case and surrounding spaces ignored): "
                        f"{_names(twice)}")
    unknown = [v for v in columns.values() if v and auto_column(target, v) is None]
    if unknown:
        problems.append(f"no such column in {target.name}: {_names(unknown)}")
    chosen = [auto_column(target, v) for v in columns.values() if v]
    generated = [c for c in chosen if c and target.columns[c].generated]
    if generated:
        problems.append(f"generated columns cannot be imported: {_names(generated)}")
    wanted = {k.strip().lower(): v for k, v in columns.items()}
    goes_to: dict[str, list[str]] = {}
    for name in header:
        key = name.strip().lower()
        if key in wanted and wanted[key] is None:  # ignored: goes to no column
            continue
        choice = wanted.get(key)
        column = auto_column(target, choice if choice is not None else name) if choice != "" else None
        if column:
            goes_to.setdefault(column, []).append(name)
    shared = [f"{column} <- {', '.join(names)}" for column, names in goes_to.items() if len(names) > 1]
    if shared:
        problems.append(f"several header fields map to one column: {'; '.join(shared)}")
    return problems


def _names(names: list[str], shown: int = 10) -> str:
    """Names for a message: quoted (an empty or spaced name stays visible), the first few."""
    out = ", ".join(repr(n[:100]) for n in names[:shown])
    return out + (f" and {len(names) - shown} more" if len(names) > shown else "")


def load(conn: psycopg.Connection[Any], table: str, header: list[str]) -> dict[str, str | None] | None:
    """The mapping saved for ``header`` into ``table``, if any."""
    row = conn.execute("SELECT columns FROM importd.mappings WHERE table_name = %s AND header_key = %s",
                       (table, header_key(header))).fetchone()
    return dict(row[0]) if row else None


def save(conn: psycopg.Connection[Any], table: str, header: list[str],
         columns: dict[str, str | None]) -> dict[str, Any]:
    """Save (or replace) the mapping of ``header`` into ``table``; the stored entry."""
    row = conn.execute(
        "INSERT INTO importd.mappings (table_name, header_key, header, columns) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (table_name, header_key) DO UPDATE SET header = excluded.header,"
        " columns = excluded.columns, updated_at = now() RETURNING updated_at",
        (table, header_key(header), Jsonb(header), Jsonb(columns))).fetchone()
    assert row is not None
    return {"table": table, "header": header, "columns": columns, "updated_at": row[0].isoformat()}


def list_saved(conn: psycopg.Connection[Any], table: str | None) -> list[dict[str, Any]]:
    """Saved mappings, newest first (of one table when ``table`` is given)."""
    rows = conn.execute(
        "SELECT table_name, header, columns, updated_at FROM importd.mappings"
        " WHERE %(t)s::text IS NULL OR table_name = %(t)s ORDER BY updated_at DESC LIMIT %(n)s",
        {"t": table, "n": MAX_LISTED}).fetchall()
    return [{"table": t, "header": h, "columns": c, "updated_at": u.isoformat()} for t, h, c, u in rows]
