"""PostgreSQL as the oracle of a CSV load: what ``psql \\copy`` does with a file, whole and
record by record, next to what importd does with it (see tests/integration/test_corpus.py).

The record split here is written from PostgreSQL's ``CopyReadLineText``, not taken from
importd: the file's line-end style is decided at the first unquoted CR or LF (CR then LF is
CRLF), and a record ends at that style's break byte (CR for CR files, LF otherwise) outside
quotes. Each record is then loaded alone behind the file's header line, as psql would load
a file holding only it.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

#: PostgreSQL names of the encodings the corpus uses (others are passed upper-cased).
PG_ENCODINGS = {"utf8": "UTF8", "utf-8": "UTF8", "cp1252": "WIN1252", "sjis": "SJIS", "latin9": "LATIN9",
                "latin1": "LATIN1"}
#: psql's own time limit, per file (a hung psql must fail the test, not hang it).
PSQL_TIMEOUT_S = 300


@dataclass(frozen=True)
class Spec:
    """How a file is loaded: the table it fits and COPY's options."""

    columns: list[tuple[str, str]]  # (name, type incl. constraints)
    delimiter: str
    encoding: str

    def ddl(self, table: str) -> sql.Composed:
        cols = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in self.columns)
        return sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table), cols)

    @property
    def pg_encoding(self) -> str:
        return PG_ENCODINGS.get(self.encoding.lower(), self.encoding.upper())

    def copy_command(self, table: str, path: Path) -> str:
        delim = f"E'\\x{ord(self.delimiter):02x}'"
        return (f"\\copy \"{table}\" FROM '{path}' WITH (FORMAT csv, HEADER true, DELIMITER {delim}, "
                f"ENCODING '{self.pg_encoding}')")


@dataclass
class Outcome:
    """What psql did with a file: the whole file, and each record alone."""

    accepted: bool  # the whole file loads
    rows: list[str]  # rows of the whole file (when accepted), as row text, sorted
    good: list[str] = field(default_factory=list)  # rows of the records that load alone, sorted
    bad_records: int = 0


def psql(url: str, commands: list[str]) -> subprocess.CompletedProcess[str]:
    script = "\n".join(commands) + "\n"
    return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=0", "-d", url, "-f", "-"], input=script,
                          capture_output=True, text=True, timeout=PSQL_TIMEOUT_S, check=False)


def table_rows(conn: psycopg.Connection[Any], table: str) -> list[str]:
    """Each row of ``table`` as its row text (NULL and '' told apart), sorted."""
    query = sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table))
    return sorted(r[0] for r in conn.execute(query).fetchall())


def eol_break(data: bytes) -> bytes:
    """The break byte of the file's line ends, as PostgreSQL's CSV reader decides them from
    the first unquoted CR or LF: CR for a bare-CR file, LF for LF and CRLF files."""
    quoted = False
    for i, c in enumerate(data):
        if c == 0x22:
            quoted = not quoted
        elif not quoted and c == 0x0A:
            return b"\n"
        elif not quoted and c == 0x0D:
            return b"\n" if data[i + 1:i + 2] == b"\n" else b"\r"
    return b"\n"


def records(data: bytes) -> list[bytes]:
    """The file's records (the header first), each with its line end; the last may have none."""
    brk = eol_break(data)[0]
    out, start, quoted = [], 0, False
    for i, c in enumerate(data):
        if c == 0x22:
            quoted = not quoted
        elif c == brk and not quoted:
            out.append(data[start:i + 1])
            start = i + 1
    if start < len(data):
        out.append(data[start:])
    return out


def quote_end_markers(path: Path, work: Path) -> Path:
    """``path``, or a copy in ``work`` whose ``\\.`` lines are quoted: psql ends the data at
    such a line, importd reads it as the value ``\\.`` (documented divergence)."""
    recs = records(path.read_bytes())
    if not any(r.rstrip(b"\r\n") == b"\\." for r in recs[1:]):
        return path
    quoted = work / f"quoted-{path.name}"
    quoted.write_bytes(recs[0] + b"".join(b'"\\."' + r[2:] if r.rstrip(b"\r\n") == b"\\." else r for r in recs[1:]))
    return quoted


def load_whole(conn: psycopg.Connection[Any], url: str, spec: Spec, path: Path, table: str) -> Outcome:
    """``psql \\copy`` of the whole file into a fresh ``table``."""
    reset(conn, spec, table)
    done = psql(url, [spec.copy_command(table, path)])
    accepted = "ERROR:" not in done.stderr
    return Outcome(accepted=accepted, rows=table_rows(conn, table) if accepted else [])


def load_each(conn: psycopg.Connection[Any], url: str, spec: Spec, path: Path, table: str,
              work: Path) -> tuple[list[str], int]:
    """``psql \\copy`` of each record alone behind the header; (rows of those that load, bad records)."""
    recs = records(path.read_bytes())
    header, body = recs[0], recs[1:]
    reset(conn, spec, table)
    commands, glued = [], 0
    for index, rec in enumerate(body):
        if header.endswith(b"\r") and rec.startswith(b"\n"):
            glued += 1  # behind the header it would make a CRLF line end; in the file it is an unquoted LF
            continue
        part = work / f"record_{index}.csv"
        part.write_bytes(header + rec)
        commands.append(spec.copy_command(table, part))
    done = psql(url, commands) if commands else None
    failed = done.stderr.count("ERROR:") if done else 0
    return table_rows(conn, table), failed + glued


def reset(conn: psycopg.Connection[Any], spec: Spec, table: str) -> None:
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
    conn.execute(spec.ddl(table))


def multiset_within(loaded: list[str], allowed: list[str]) -> bool:
    """True if every loaded row is one of ``allowed`` (as many times at most)."""
    return not (Counter(loaded) - Counter(allowed))
