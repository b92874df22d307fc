"""Where a file may go: the table allowlist, the table's columns from the catalog, and the
mapping of CSV header columns to table columns.

Names from a request or a file are only ever compared with catalog names and then passed to
SQL as :class:`psycopg.sql.Identifier`; nothing is spliced into SQL text.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import psycopg

from importd.config import Settings
from importd.imports.copy.spec import IGNORED, Column, Target


class TargetError(ValueError):
    """The job's table or header cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def split_name(name: str) -> tuple[str, str]:
    """("schema", "table") of an allowlist entry or job table name; schema defaults to public."""
    schema, dot, table = name.strip().rpartition(".")
    return (schema if dot else "public"), table


def allowed(settings: Settings, name: str) -> tuple[str, str]:
    """The allowlisted (schema, table) that ``name`` designates; TargetError if none."""
    if not name or not isinstance(name, str):
        raise TargetError(["no target table given"])
    wanted = split_name(name)
    for entry in settings.table_list:
        if split_name(entry) == wanted:
            return wanted
    raise TargetError([f"table {name!r} is not on the allowlist (IMPORTD_TABLES)"])


_CATALOG = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       a.atthasdef OR a.attidentity <> '', a.attgenerated <> ''
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def load(conn: psycopg.Connection[Any], settings: Settings, name: str) -> Target:
    """The allowlisted table ``name`` with its columns; TargetError if absent or not allowed."""
    schema, table = allowed(settings, name)
    rows = conn.execute(_CATALOG, (schema, table)).fetchall()
    if not rows:
        raise TargetError([f"table {schema}.{table} does not exist"])
    columns = {r[0]: Column(r[0], r[1], bool(r[2]), bool(r[3]), bool(r[4])) for r in rows}
    return Target(schema, table, columns)


def map_header(target: Target, header: list[str], mapping: dict[str, str | None] | None = None) -> list[str]:
    """Table column for each header field, in file order (:data:`IGNORED` for a field the
    mapping sends to null: its values are read and dropped); TargetError listing every problem.

    A header name matches a column by ``mapping`` (header name -> column, or None to ignore
    the field) first, then by name with case and surrounding spaces ignored (an exact-case
    match wins over others). A field is ignored only when the mapping says so: a name the
    table lacks (an empty one too, as a spreadsheet's trailing delimiter makes) is refused.
    """
    problems: list[str] = []
    mapping = {k.strip().lower(): v for k, v in (mapping or {}).items()}
    ignored = {k for k, v in mapping.items() if v is None}
    by_lower: dict[str, list[str]] = {}
    for column in target.columns:
        by_lower.setdefault(column.lower(), []).append(column)
    stripped = [h.strip() for h in header]
    if not any(stripped):
        raise TargetError(["the header has no column names"])
    dupes = [name for name, n in Counter(h.lower() for h in stripped if h and h.lower() not in ignored).items()
             if n > 1]  # empty: unknown below; ignored: never loaded
    if dupes:
        problems.append(f"duplicate header columns: {_names(sorted(dupes))}")
    result: list[str] = []
    unknown: list[str] = []
    for position, name in enumerate(stripped, 1):
        if name.lower() in ignored:
            result.append(IGNORED)
            continue
        col = _match(name, mapping, by_lower, target)
        if col is None:
            unknown.append(name or f"(empty name, column {position})")
        elif target.columns[col].generated:
            problems.append(f"column {col!r} is generated and cannot be imported")
        result.append(col or "")
    if unknown:
        problems.append(f"unknown header columns for {target.name}: {_names(unknown)}")
    if all(c == IGNORED for c in result) and not unknown:
        problems.append("every header column is ignored: nothing to load")
    mapped = Counter(c for c in result if c)
    twice = sorted(c for c, n in mapped.items() if n > 1)
    if twice and not dupes:
        problems.append(f"several header columns map to: {_names(twice)}")
    missing = [c.name for c in target.columns.values() if c.required and c.name not in mapped]
    if missing:
        problems.append(f"NOT NULL columns without default missing from the header: {', '.join(missing)}")
    if problems:
        raise TargetError(problems)
    return result


#: Names a problem lists at most, and characters of each shown: a header of 400 000 names
#: (or of one 100 KB name) made a multi-megabyte answer and job error.
MAX_LISTED_NAMES = 20
MAX_NAME_CHARS = 100


def _names(names: list[str]) -> str:
    """``names`` for a problem text: the first :data:`MAX_LISTED_NAMES`, each cut to
    :data:`MAX_NAME_CHARS`, then how many more there are."""
    shown = [n if len(n) <= MAX_NAME_CHARS else n[:MAX_NAME_CHARS] + "…" for n in names[:MAX_LISTED_NAMES]]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def _match(name: str, mapping: dict[str, str | None], by_lower: dict[str, list[str]],
           target: Target) -> str | None:
    explicit = mapping.get(name.lower())
    if explicit is not None:
        explicit = str(explicit)
        if explicit in target.columns:
            return explicit
        candidates = by_lower.get(explicit.strip().lower(), [])
        return candidates[0] if len(candidates) == 1 else None
    candidates = by_lower.get(name.lower(), [])
    if name in candidates:
        return name
    return candidates[0] if len(candidates) == 1 else None
